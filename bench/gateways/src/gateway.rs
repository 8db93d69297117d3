//! The targets: the upstream itself (the baseline), moat, and the peer gateways, each with
//! how it is configured and started, and where each workload is sent through it.
//!
//! Every gateway gets its best configuration for this job: logging off or at warnings,
//! no database, no telemetry, keep-alive on, one process (one worker) on the gateway core.

use std::path::{Path, PathBuf};

use crate::load::ClientApi;
use crate::workload::Workload;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    Direct,
    Moat,
    Litellm,
    Portkey,
    Ccr,
    /// nginx as a plain reverse proxy: the physical limit for the same bytes on this machine.
    Nginx,
}

impl Kind {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Moat => "moat",
            Kind::Litellm => "LiteLLM",
            Kind::Portkey => "Portkey",
            Kind::Ccr => "claude-code-router",
            Kind::Nginx => "nginx",
        }
    }
}

/// Where one workload goes through one target.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub url: String,
    pub api: ClientApi,
    pub model: String,
    pub headers: Vec<(String, String)>,
}

/// How to start a gateway.
#[derive(Debug, Clone, Default)]
pub(crate) struct Launch {
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Config files written before the start, shown in the report.
    pub files: Vec<(PathBuf, String)>,
    pub cwd: Option<PathBuf>,
}

/// Where the installed gateways are (from the `run` script).
#[derive(Debug, Clone, Default)]
pub(crate) struct Installs {
    pub moat: PathBuf,
    pub litellm: Option<PathBuf>,
    pub portkey: Option<PathBuf>,
    pub ccr: Option<PathBuf>,
    pub nginx: Option<PathBuf>,
}

impl Installs {
    pub(crate) fn path(&self, kind: Kind) -> Option<&Path> {
        match kind {
            Kind::Direct => None,
            Kind::Moat => Some(&self.moat),
            Kind::Litellm => self.litellm.as_deref(),
            Kind::Portkey => self.portkey.as_deref(),
            Kind::Ccr => self.ccr.as_deref(),
            Kind::Nginx => self.nginx.as_deref(),
        }
    }
}

/// LiteLLM refuses to start without a master key; this one exists only for the bench's
/// loopback run.
const LITELLM_KEY: &str = "sk-bench-litellm-master";

/// Why a peer's Responses API to an OpenAI-format provider is not measured: it forwards
/// the request as is to the provider's own `/v1/responses`, which this fake upstream (Chat
/// Completions and Messages only) does not serve; a failure there would be the fake's.
const NATIVE_RESPONSES: &str = "not measured: it forwards the Responses API to the provider natively, and the fake upstream speaks only Chat Completions and Messages";

fn path_of(api: ClientApi) -> &'static str {
    match api {
        ClientApi::Openai => "/v1/chat/completions",
        ClientApi::Anthropic => "/v1/messages",
        ClientApi::Responses => "/v1/responses",
    }
}

/// Where workload `w` goes through `kind` listening on `port`, the fake upstream being on
/// `upstream`; `Err` says why the target does not do this workload.
pub(crate) fn endpoint(
    kind: Kind,
    w: &Workload,
    port: u16,
    upstream: u16,
) -> Result<Endpoint, &'static str> {
    let model = w.shape.model();
    let at = |api: ClientApi| format!("http://127.0.0.1:{port}{}", path_of(api));
    let plain = |model: String| Endpoint {
        url: at(w.client),
        api: w.client,
        model,
        headers: Vec::new(),
    };
    match kind {
        // The baseline for a translated workload is a client of the upstream's own format.
        Kind::Direct => Ok(Endpoint {
            url: format!("http://127.0.0.1:{upstream}{}", path_of(w.upstream)),
            api: w.upstream,
            model,
            headers: Vec::new(),
        }),
        Kind::Moat => Ok(plain(match w.upstream {
            ClientApi::Anthropic => format!("ant:{model}"),
            _ => model,
        })),
        Kind::Litellm if w.client == ClientApi::Responses && w.upstream == ClientApi::Openai => {
            Err(NATIVE_RESPONSES)
        }
        Kind::Litellm => {
            let mut e = plain(match w.upstream {
                ClientApi::Anthropic => format!("anthropic/{model}"),
                _ => format!("openai/{model}"),
            });
            e.headers = vec![match w.client {
                ClientApi::Anthropic => ("x-api-key".into(), LITELLM_KEY.into()),
                _ => ("authorization".into(), format!("Bearer {LITELLM_KEY}")),
            }];
            Ok(e)
        }
        Kind::Portkey if w.client == ClientApi::Responses && w.upstream == ClientApi::Openai => {
            Err(NATIVE_RESPONSES)
        }
        Kind::Portkey => {
            if w.client == ClientApi::Anthropic && w.translated() {
                return Err(
                    "its /v1/messages answers \"messages is not supported by openai\": Anthropic-format providers only",
                );
            }
            let (provider, key) = match w.upstream {
                ClientApi::Anthropic => ("anthropic", ("x-api-key", "bench-upstream-key")),
                _ => ("openai", ("authorization", "Bearer bench-upstream-key")),
            };
            let mut e = plain(model);
            e.headers = vec![
                ("x-portkey-provider".into(), provider.into()),
                (
                    "x-portkey-custom-host".into(),
                    format!("http://127.0.0.1:{upstream}/v1"),
                ),
                (key.0.into(), key.1.into()),
            ];
            Ok(e)
        }
        Kind::Nginx if w.translated() => {
            Err("a plain reverse proxy passes bytes through; it does not translate")
        }
        Kind::Nginx => Ok(plain(model)),
        Kind::Ccr => {
            if !(w.client == ClientApi::Anthropic && w.upstream == ClientApi::Openai) {
                return Err(
                    "it serves Anthropic-format clients only (its /v1/chat/completions: \"Provider 'undefined' not found\")",
                );
            }
            Ok(plain(format!("bench,{model}")))
        }
    }
}

/// How to start `kind` on `port` in front of the upstream on `upstream`, with its files in `dir`.
pub(crate) fn launch(kind: Kind, install: &Path, dir: &Path, port: u16, upstream: u16) -> Launch {
    let s = |v: &str| v.to_string();
    let file = |name: &str, text: String| (dir.join(name), text);
    match kind {
        Kind::Direct => Launch::default(),
        Kind::Moat => Launch {
            command: vec![
                install.display().to_string(),
                s("serve"),
                s("--listen"),
                format!("127.0.0.1:{port}"),
            ],
            env: vec![
                (s("MOAT_HOME"), dir.join("home").display().to_string()),
                (s("MOAT_SEAL_DIR"), dir.join("seal").display().to_string()),
                (s("MOAT_SEAL_STORE"), s("file")),
                (s("MOAT_LOG"), s("warn")),
                // Limits that would refuse a benchmark's load are raised; every check stays
                // in the path.
                (s("MOAT_RATE_LIMIT_PER_SECOND"), s("1000000000")),
                (s("MOAT_RATE_LIMIT_BURST"), s("1000000000")),
                (s("MOAT_RATE_LIMIT_LOOPBACK_PER_SECOND"), s("1000000000")),
                (s("MOAT_RATE_LIMIT_LOOPBACK_BURST"), s("1000000000")),
                (s("MOAT_MAX_CONNECTIONS_PER_IP"), s("100000")),
                (s("MOAT_MAX_CONNECTIONS"), s("100000")),
            ],
            files: vec![file(
                "home/config.toml",
                format!(
                    r#"[llm.backends.oai]
kind = "openai"
base_url = "http://127.0.0.1:{upstream}/v1"
models = ["bench-*"]
max_concurrency = 8192
max_queue = 8192

[llm.backends.ant]
kind = "anthropic"
base_url = "http://127.0.0.1:{upstream}"
max_concurrency = 8192
max_queue = 8192
"#
                ),
            )],
            cwd: None,
        },
        Kind::Litellm => Launch {
            command: vec![
                install.display().to_string(),
                s("--config"),
                dir.join("litellm.yaml").display().to_string(),
                s("--host"),
                s("127.0.0.1"),
                s("--port"),
                port.to_string(),
                s("--num_workers"),
                s("1"),
                s("--keepalive_timeout"),
                s("75"),
            ],
            env: [
                ("LITELLM_LOG", "ERROR"),
                // Without these it fetches price lists and presets from the internet at start.
                ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
                ("LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS", "True"),
                ("LITELLM_LOCAL_BLOG_POSTS", "True"),
                ("LITELLM_LOCAL_POLICY_TEMPLATES", "True"),
                ("LITELLM_LOCAL_AUTOROUTER_PRESETS", "True"),
                ("LITELLM_TELEMETRY", "False"),
            ]
            .iter()
            .map(|(k, v)| (s(k), s(v)))
            .chain([(s("HOME"), dir.display().to_string())])
            .collect(),
            files: vec![file(
                "litellm.yaml",
                format!(
                    r#"model_list:
  - model_name: "openai/*"
    litellm_params:
      model: "openai/*"
      api_base: "http://127.0.0.1:{upstream}/v1"
      api_key: "bench-upstream-key"
  - model_name: "anthropic/*"
    litellm_params:
      model: "anthropic/*"
      api_base: "http://127.0.0.1:{upstream}"
      api_key: "bench-upstream-key"
litellm_settings:
  set_verbose: false
  json_logs: false
  turn_off_message_logging: true
  drop_params: true
  # Anthropic clients to OpenAI upstreams go to Chat Completions, not the Responses API.
  use_chat_completions_url_for_anthropic_messages: true
  request_timeout: 600
  num_retries: 0
  callbacks: []
  success_callback: []
  failure_callback: []
general_settings:
  master_key: "{LITELLM_KEY}"
  disable_spend_logs: true
  disable_error_logs: true
"#
                ),
            )],
            cwd: Some(dir.to_path_buf()),
        },
        Kind::Portkey => Launch {
            // `--port P` (no `=`) is ignored. It listens on every interface: it has no host
            // option.
            command: vec![
                s("node"),
                install.display().to_string(),
                format!("--port={port}"),
                s("--headless"),
            ],
            env: vec![(s("NODE_ENV"), s("production"))],
            files: Vec::new(),
            cwd: Some(dir.to_path_buf()),
        },
        Kind::Ccr => Launch {
            command: vec![s("node"), install.display().to_string(), s("start")],
            env: vec![(s("HOME"), dir.display().to_string())],
            files: vec![file(
                ".claude-code-router/config.json",
                format!(
                    r#"{{
  "HOST": "127.0.0.1",
  "PORT": {port},
  "LOG": false,
  "API_TIMEOUT_MS": 600000,
  "NON_INTERACTIVE_MODE": true,
  "Providers": [
    {{
      "name": "bench",
      "api_base_url": "http://127.0.0.1:{upstream}/v1/chat/completions",
      "api_key": "bench-upstream-key",
      "models": ["{model}"]
    }}
  ],
  "Router": {{ "default": "bench,{model}" }}
}}
"#,
                    model = crate::workload::by_name("ant-to-oai")
                        .map(|w| w.shape.model())
                        .unwrap_or_default()
                ),
            )],
            cwd: Some(dir.to_path_buf()),
        },
        Kind::Nginx => Launch {
            command: vec![
                install.display().to_string(),
                s("-p"),
                dir.display().to_string(),
                s("-c"),
                dir.join("nginx.conf").display().to_string(),
            ],
            env: Vec::new(),
            files: vec![file("nginx.conf", nginx_conf(dir, port, upstream))],
            cwd: Some(dir.to_path_buf()),
        },
    }
}

/// nginx as a plain reverse proxy at its best for this job: one worker (on the gateway
/// core, like every target), no access log, a keep-alive pool to the upstream, nothing
/// buffered (streams pass as they come), request bodies held in memory up to the large
/// workload's size rather than spilled to a file.
fn nginx_conf(dir: &Path, port: u16, upstream: u16) -> String {
    let dir = dir.display();
    format!(
        r#"daemon off;
worker_processes 1;
worker_rlimit_nofile 65536;
error_log stderr warn;
pid {dir}/nginx.pid;
events {{
    worker_connections 16384;
}}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 64m;
    client_body_buffer_size 256k;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream bench {{
        server 127.0.0.1:{upstream};
        keepalive 1024;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
}}
"#
    )
}
