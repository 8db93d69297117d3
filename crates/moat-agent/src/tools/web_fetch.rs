//! `web_fetch`: a page through moat's egress client (the address policy, each redirect
//! judged again, size and time caps), as text. A bounded number of pages per session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use moat_net::egress::{FetchRequest, Fetcher};
use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolResult, field};
use crate::trust::ToolClass;

/// The most pages one session may fetch.
pub const MAX_PAGES_PER_SESSION: u32 = 20;

/// The most characters of a page's text the model gets.
const MAX_CHARS: usize = 32 * 1024;

/// The web_fetch tool.
pub struct WebFetch {
    fetcher: Arc<Fetcher>,
    pages: Mutex<HashMap<String, u32>>,
}

impl WebFetch {
    /// Fetching through `fetcher` (built from `[egress]`).
    pub fn new(fetcher: Arc<Fetcher>) -> WebFetch {
        WebFetch {
            fetcher,
            pages: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait::async_trait]
impl Tool for WebFetch {
    fn name(&self) -> &'static str {
        "web_fetch"
    }

    fn description(&self) -> &'static str {
        "Fetch a web page (http or https) and read it as text."
    }

    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {"url": {"type": "string"}},
            "required": ["url"],
        })
    }

    fn has_read_only_calls(&self) -> bool {
        true
    }

    fn class(&self, _input: &Value) -> ToolClass {
        ToolClass {
            domain: "web",
            read_only: true,
        }
    }

    async fn run(&self, ctx: &ToolContext, input: &Value) -> ToolResult {
        let url = field(input, "url")?;
        {
            let mut pages = self
                .pages
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = pages.entry(ctx.session.clone()).or_insert(0);
            if *n >= MAX_PAGES_PER_SESSION {
                return Err(format!(
                    "this session has fetched {MAX_PAGES_PER_SESSION} pages, the most it may"
                ));
            }
            *n += 1;
        }
        let request =
            FetchRequest::get(url).accept(&["text/*", "application/json", "application/xhtml+xml"]);
        let resp = self
            .fetcher
            .fetch(&ctx.session, request)
            .await
            .map_err(|e| format!("cannot fetch it: {e}"))?;
        let body = String::from_utf8_lossy(&resp.body);
        let is_html = resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.contains("html"));
        let mut text = if is_html {
            html_text(&body)
        } else {
            body.into_owned()
        };
        if text.chars().count() > MAX_CHARS {
            text = text.chars().take(MAX_CHARS).collect();
            text.push_str("\n[cut]");
        }
        let status = resp.status;
        if !status.is_success() {
            return Err(format!("{} answered {status}:\n{text}", resp.url));
        }
        Ok(format!("{} ({status})\n{text}", resp.url))
    }
}

/// The readable text of an HTML page: no tags, scripts or styles; the common entities
/// decoded; blank runs collapsed.
pub(crate) fn html_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let lower = html.to_ascii_lowercase();
    let mut i = 0;
    while i < html.len() {
        let Some(rel) = html[i..].find('<') else {
            out.push_str(&html[i..]);
            break;
        };
        out.push_str(&html[i..i + rel]);
        let tag_start = i + rel;
        // Script and style contents are not text.
        let skip_to = ["script", "style"].iter().find_map(|name| {
            lower[tag_start + 1..]
                .starts_with(name)
                .then(|| {
                    lower[tag_start..]
                        .find(&format!("</{name}"))
                        .map(|e| tag_start + e)
                })
                .flatten()
        });
        let from = skip_to.unwrap_or(tag_start);
        match html[from..].find('>') {
            Some(end) => {
                let tag = &lower[tag_start..from + end];
                if [
                    "<p", "<br", "<div", "<li", "<h", "<tr", "</p", "</div", "</h",
                ]
                .iter()
                .any(|t| tag.starts_with(t))
                {
                    out.push('\n');
                }
                i = from + end + 1;
            }
            None => break,
        }
    }
    let decoded = out
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    let mut text = String::with_capacity(decoded.len());
    for line in decoded.lines() {
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if !line.is_empty() {
            text.push_str(&line);
            text.push('\n');
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_becomes_its_text() {
        let page = "<html><head><style>p{x:1}</style><script>var a='<p>';</script></head>\
                    <body><h1>Title</h1><p>One &amp; two&nbsp;&lt;3</p><div>Ignore   all</div></body>";
        assert_eq!(html_text(page), "Title\nOne & two <3\nIgnore all\n");
        assert_eq!(html_text("no tags"), "no tags\n");
        assert_eq!(html_text("cut <a href="), "cut\n");
    }
}
