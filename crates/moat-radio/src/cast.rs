//! Casting: the station on the speakers of the house, through UPnP/DLNA media renderers.
//!
//! Discovery is SSDP: an `M-SEARCH` for `MediaRenderer` sent to the multicast group on
//! one interface (the LAN listener's, when it names one), with a TTL of 2 so it stays on
//! the home network. Control is SOAP: `AVTransport` (SetAVTransportURI with DIDL-Lite
//! metadata, Play, Stop, GetTransportInfo) and `RenderingControl` (volume).
//!
//! Anything on the LAN can answer a multicast search, so an answer is believed only as
//! far as it can be checked: its `LOCATION` must be plain http at the very address the
//! answer came from, and that address must be a local-network one (never loopback: a
//! device could otherwise point moat at its own services). Every later request, for the
//! description and each action, goes through a client that reaches that origin only,
//! whatever URLs the description holds, with a time limit and a size cap on each answer.
//! (A UPnP crate such as `rupnp` reads whole answers unbounded; the protocol is small
//! enough to speak here with `roxmltree`, which refuses DTDs and with them entity bombs.)
//!
//! The renderer is only ever handed the LAN listener's `/radio/live`: a read-only route,
//! with no token or credential in the URL.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header;
use http_body_util::Full;
use moat_net::egress::Egress;
use url::Url;

/// The SSDP multicast group and port.
const SSDP_GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 1900);
/// What moat searches for.
const MEDIA_RENDERER: &str = "urn:schemas-upnp-org:device:MediaRenderer:1";
const MEDIA_RENDERER_PREFIX: &str = "urn:schemas-upnp-org:device:MediaRenderer:";
const AV_TRANSPORT_PREFIX: &str = "urn:schemas-upnp-org:service:AVTransport:";
const RENDERING_CONTROL_PREFIX: &str = "urn:schemas-upnp-org:service:RenderingControl:";
/// Search answers read at most (a busy LAN answers once per device and service).
const MAX_ANSWERS: usize = 512;
/// Renderers described at most per search.
const MAX_RENDERERS: usize = 32;
/// A device description's size at most.
const MAX_DESCRIPTION: usize = 256 * 1024;
/// A SOAP answer's size at most.
const MAX_SOAP_ANSWER: usize = 64 * 1024;
/// One request to a renderer, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a search may listen for answers.
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// Why casting failed. No text here holds a credential: renderers are only told the
/// stream's LAN URL, which has none.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CastError {
    /// The search could not be sent.
    #[error("cannot search the network for speakers: {0}")]
    Search(String),
    /// No renderer by that name answered the last search.
    #[error("no speaker named {0:?} answered; `moat radio cast list` shows those that do")]
    NotFound(String),
    /// The renderer did not answer.
    #[error("the speaker {name:?} did not answer {call}: {why}")]
    Unreachable {
        /// The renderer's friendly name.
        name: String,
        /// The action or request.
        call: &'static str,
        /// What went wrong.
        why: String,
    },
    /// The renderer answered with a UPnP error.
    #[error("the speaker {name:?} refused {call}: UPnP error {code} ({description})")]
    Refused {
        /// The renderer's friendly name.
        name: String,
        /// The action.
        call: &'static str,
        /// The UPnP error code.
        code: String,
        /// The renderer's words, cleaned.
        description: String,
    },
    /// The renderer's answer was not UPnP.
    #[error("the speaker {name:?} answered {call} with something else than UPnP: {why}")]
    Protocol {
        /// The renderer's friendly name (or its address while undescribed).
        name: String,
        /// The action or request.
        call: &'static str,
        /// What was wrong.
        why: String,
    },
    /// The renderer has no volume control.
    #[error("the speaker {0:?} has no volume control")]
    NoVolume(String),
}

/// Sends an SSDP search for media renderers from `interface` (the system's choice of
/// interface when `None`) and gathers the description URLs that pass the checks above,
/// for `wait`.
pub async fn search(interface: Option<Ipv4Addr>, wait: Duration) -> Result<Vec<Url>, CastError> {
    let wait = wait.clamp(Duration::from_millis(500), MAX_WAIT);
    let socket = search_socket(interface).map_err(|e| CastError::Search(e.to_string()))?;
    let mx = wait.as_secs().clamp(1, 5);
    let request = format!(
        "M-SEARCH * HTTP/1.1\r\nHOST: {SSDP_GROUP}\r\nMAN: \"ssdp:discover\"\r\nMX: {mx}\r\nST: {MEDIA_RENDERER}\r\nUSER-AGENT: moat/{} UPnP/1.1\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    // UDP may lose one; renderers answer each.
    for _ in 0..2 {
        socket
            .send_to(request.as_bytes(), SocketAddr::V4(SSDP_GROUP))
            .await
            .map_err(|e| CastError::Search(e.to_string()))?;
    }
    let mut found: Vec<Url> = Vec::new();
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    for _ in 0..MAX_ANSWERS {
        let Ok(received) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await
        else {
            break;
        };
        let Ok((n, from)) = received else { continue };
        let Some(location) = answer_location(&buf[..n], from.ip()) else {
            continue;
        };
        if !found.contains(&location) && found.len() < MAX_RENDERERS {
            found.push(location);
        }
    }
    Ok(found)
}

fn search_socket(interface: Option<Ipv4Addr>) -> std::io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let bind = interface.unwrap_or(Ipv4Addr::UNSPECIFIED);
    socket.bind(&SocketAddr::from((bind, 0)).into())?;
    if let Some(ip) = interface {
        socket.set_multicast_if_v4(&ip)?;
    }
    // UPnP's advice: no further than a router or two.
    socket.set_multicast_ttl_v4(2)?;
    socket.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(socket.into())
}

/// The `LOCATION` of one search answer, if it is one moat believes: a 200 for a media
/// renderer, plain http at the address the answer came from, on the local network.
fn answer_location(datagram: &[u8], from: IpAddr) -> Option<Url> {
    let text = std::str::from_utf8(datagram).ok()?;
    let mut lines = text.split("\r\n");
    let status = lines.next()?;
    if !status.starts_with("HTTP/1.1 200") && !status.starts_with("HTTP/1.0 200") {
        return None;
    }
    let mut location = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("location") {
            location = Some(value.trim());
        }
    }
    let url = Url::parse(location?).ok()?;
    let IpAddr::V4(from) = from else { return None };
    let same_host = matches!(url.host(), Some(url::Host::Ipv4(ip)) if ip == from);
    (url.scheme() == "http"
        && same_host
        && on_local_network(from)
        && url.username().is_empty()
        && url.password().is_none())
    .then_some(url)
}

/// Addresses a home speaker can have: private, link-local and shared (CGNAT) ranges.
fn on_local_network(ip: Ipv4Addr) -> bool {
    let shared = u32::from(ip) & 0xFFC0_0000 == 0x6440_0000;
    ip.is_private() || ip.is_link_local() || shared
}

/// A media renderer moat has read the description of.
#[derive(Debug, Clone)]
pub struct Renderer {
    /// Its friendly name.
    pub name: String,
    /// Its unique device name (`uuid:...`).
    pub udn: String,
    /// Its model, as it says.
    pub model: String,
    /// Its address.
    pub address: Ipv4Addr,
    transport: Service,
    rendering: Option<Service>,
    egress: Egress,
}

#[derive(Debug, Clone)]
struct Service {
    kind: String,
    control: Url,
}

impl Renderer {
    /// Reads the description at `location` (a URL [`search`] gave).
    pub async fn describe(location: &Url) -> Result<Renderer, CastError> {
        let address = match location.host() {
            Some(url::Host::Ipv4(ip)) => ip,
            _ => {
                return Err(CastError::Protocol {
                    name: location.host_str().unwrap_or("?").to_string(),
                    call: "description",
                    why: "its address is not an IPv4 address".into(),
                });
            }
        };
        let egress = Egress::for_upstream(location, CALL_TIMEOUT);
        let who = address.to_string();
        let unreachable = |why: String| CastError::Unreachable {
            name: who.clone(),
            call: "description",
            why,
        };
        let req = http::Request::get(location.as_str())
            .header(header::USER_AGENT, user_agent())
            .header(header::CONNECTION, "close")
            .body(Full::new(Bytes::new()))
            .map_err(|e| unreachable(e.to_string()))?;
        let body = tokio::time::timeout(CALL_TIMEOUT, async {
            let resp = egress
                .send(req)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            if !resp.status().is_success() {
                return Err(unreachable(format!("HTTP {}", resp.status())));
            }
            read_limited(resp.into_body(), MAX_DESCRIPTION)
                .await
                .map_err(unreachable)
        })
        .await
        .map_err(|_| unreachable("no answer in time".into()))??;
        let description =
            parse_description(&body, location).map_err(|why| CastError::Protocol {
                name: who.clone(),
                call: "description",
                why,
            })?;
        Ok(Renderer {
            name: description.name,
            udn: description.udn,
            model: description.model,
            address,
            transport: description.transport,
            rendering: description.rendering,
            egress,
        })
    }

    /// Points the renderer at `stream` and starts it.
    pub async fn play(&self, stream: &str, title: &str, mime: &str) -> Result<(), CastError> {
        let metadata = didl_lite(stream, title, mime);
        self.call(
            &self.transport,
            "SetAVTransportURI",
            &[
                ("InstanceID", "0"),
                ("CurrentURI", stream),
                ("CurrentURIMetaData", &metadata),
            ],
        )
        .await?;
        self.call(
            &self.transport,
            "Play",
            &[("InstanceID", "0"), ("Speed", "1")],
        )
        .await?;
        Ok(())
    }

    /// Stops the renderer.
    pub async fn stop(&self) -> Result<(), CastError> {
        self.call(&self.transport, "Stop", &[("InstanceID", "0")])
            .await
            .map(drop)
    }

    /// The transport state it reports: `PLAYING`, `STOPPED`, `TRANSITIONING`, ...
    pub async fn state(&self) -> Result<String, CastError> {
        let answer = self
            .call(&self.transport, "GetTransportInfo", &[("InstanceID", "0")])
            .await?;
        Ok(answer
            .get("CurrentTransportState")
            .cloned()
            .unwrap_or_default())
    }

    /// The URI it plays now (empty when none).
    pub async fn current_uri(&self) -> Result<String, CastError> {
        let answer = self
            .call(&self.transport, "GetMediaInfo", &[("InstanceID", "0")])
            .await?;
        Ok(answer.get("CurrentURI").cloned().unwrap_or_default())
    }

    /// Its master volume, 0 to 100, when it has a volume control.
    pub async fn volume(&self) -> Result<Option<u8>, CastError> {
        let Some(rendering) = &self.rendering else {
            return Ok(None);
        };
        let answer = self
            .call(
                rendering,
                "GetVolume",
                &[("InstanceID", "0"), ("Channel", "Master")],
            )
            .await?;
        Ok(answer
            .get("CurrentVolume")
            .and_then(|v| v.trim().parse::<u8>().ok()))
    }

    /// Sets its master volume (0 to 100).
    pub async fn set_volume(&self, volume: u8) -> Result<(), CastError> {
        let Some(rendering) = &self.rendering else {
            return Err(CastError::NoVolume(self.name.clone()));
        };
        let volume = volume.min(100).to_string();
        self.call(
            rendering,
            "SetVolume",
            &[
                ("InstanceID", "0"),
                ("Channel", "Master"),
                ("DesiredVolume", &volume),
            ],
        )
        .await
        .map(drop)
    }

    /// Whether `name` names this renderer: its friendly name (any case) or its UDN.
    pub fn is_named(&self, name: &str) -> bool {
        let name = name.trim();
        self.name.eq_ignore_ascii_case(name)
            || self.udn.eq_ignore_ascii_case(name)
            || self
                .udn
                .strip_prefix("uuid:")
                .is_some_and(|u| u.eq_ignore_ascii_case(name))
    }

    async fn call(
        &self,
        service: &Service,
        action: &'static str,
        args: &[(&str, &str)],
    ) -> Result<BTreeMap<String, String>, CastError> {
        let unreachable = |why: String| CastError::Unreachable {
            name: self.name.clone(),
            call: action,
            why,
        };
        let protocol = |why: &str| CastError::Protocol {
            name: self.name.clone(),
            call: action,
            why: why.to_string(),
        };
        let req = http::Request::post(service.control.as_str())
            .header(header::CONTENT_TYPE, "text/xml; charset=\"utf-8\"")
            .header("SOAPACTION", format!("\"{}#{action}\"", service.kind))
            .header(header::USER_AGENT, user_agent())
            // Renderers (libupnp among them) drop a connection after each answer without
            // saying so; a pooled one would then break under the next call.
            .header(header::CONNECTION, "close")
            .body(Full::new(Bytes::from(soap_envelope(
                &service.kind,
                action,
                args,
            ))))
            .map_err(|e| unreachable(e.to_string()))?;
        let (status, body) = tokio::time::timeout(CALL_TIMEOUT, async {
            let resp = self
                .egress
                .send(req)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = resp.status();
            let body = read_limited(resp.into_body(), MAX_SOAP_ANSWER)
                .await
                .map_err(unreachable)?;
            Ok::<_, CastError>((status, body))
        })
        .await
        .map_err(|_| unreachable("no answer in time".into()))??;
        match parse_soap_answer(&body) {
            Ok(Answer::Values(values)) if status.is_success() => Ok(values),
            Ok(Answer::Values(_)) => Err(unreachable(format!("HTTP {status}"))),
            Ok(Answer::Fault { code, description }) => Err(CastError::Refused {
                name: self.name.clone(),
                call: action,
                code,
                description,
            }),
            Err(_) if !status.is_success() => Err(unreachable(format!("HTTP {status}"))),
            Err(why) => Err(protocol(&why)),
        }
    }
}

fn user_agent() -> String {
    format!("moat/{} UPnP/1.1", env!("CARGO_PKG_VERSION"))
}

async fn read_limited(body: hyper::body::Incoming, max: usize) -> Result<Bytes, String> {
    crate::body::read_limited(body, max)
        .await
        .map_err(|e| match e {
            crate::body::BodyError::TooLarge => {
                format!("the answer is larger than {} KiB", max / 1024)
            }
            crate::body::BodyError::BrokeOff => "the answer broke off".into(),
        })
}

/// What a device description says of the first media renderer in it.
struct Description {
    name: String,
    udn: String,
    model: String,
    transport: Service,
    rendering: Option<Service>,
}

fn parse_description(body: &[u8], location: &Url) -> Result<Description, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the description is not UTF-8")?;
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("not XML: {e}"))?;
    let child_text = |node: roxmltree::Node<'_, '_>, name: &str| -> String {
        node.children()
            .find(|c| c.is_element() && c.tag_name().name() == name)
            .and_then(|c| c.text())
            .map(|t| clean(t.trim()))
            .unwrap_or_default()
    };
    // URLBase is deprecated but still sent; relative URLs resolve against it or the
    // description's own URL. Either way the origin must stay the renderer's.
    let base = doc
        .descendants()
        .find(|n| n.is_element() && n.tag_name().name() == "URLBase")
        .and_then(|n| n.text())
        .and_then(|t| Url::parse(t.trim()).ok())
        .filter(|u| u.origin() == location.origin())
        .unwrap_or_else(|| location.clone());
    let device = doc
        .descendants()
        .filter(|n| n.is_element() && n.tag_name().name() == "device")
        .find(|d| child_text(*d, "deviceType").starts_with(MEDIA_RENDERER_PREFIX))
        .ok_or("it describes no MediaRenderer")?;
    let services: Vec<Service> = device
        .children()
        .filter(|c| c.is_element() && c.tag_name().name() == "serviceList")
        .flat_map(|list| list.children().filter(|s| s.is_element()))
        .filter_map(|s| {
            let kind = child_text(s, "serviceType");
            let control = base.join(&child_text(s, "controlURL")).ok()?;
            // A control URL elsewhere would make moat a messenger to another host.
            (control.origin() == location.origin()).then_some(Service { kind, control })
        })
        .collect();
    let find = |prefix: &str| {
        services
            .iter()
            .find(|s| s.kind.starts_with(prefix))
            .cloned()
    };
    let transport = find(AV_TRANSPORT_PREFIX).ok_or("its MediaRenderer has no AVTransport")?;
    let name = child_text(device, "friendlyName");
    let udn = child_text(device, "UDN");
    if udn.is_empty() {
        return Err("its MediaRenderer has no UDN".into());
    }
    Ok(Description {
        name: if name.is_empty() { udn.clone() } else { name },
        udn,
        model: child_text(device, "modelName"),
        transport,
        rendering: find(RENDERING_CONTROL_PREFIX),
    })
}

/// A device's words, fit to show: no control characters, at most 120 characters.
fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(120).collect()
}

enum Answer {
    Values(BTreeMap<String, String>),
    Fault { code: String, description: String },
}

fn parse_soap_answer(body: &[u8]) -> Result<Answer, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the answer is not UTF-8")?;
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("not XML: {e}"))?;
    let body = doc
        .descendants()
        .find(|n| n.is_element() && n.tag_name().name() == "Body")
        .ok_or("no SOAP Body")?;
    let first = body
        .children()
        .find(|c| c.is_element())
        .ok_or("an empty SOAP Body")?;
    if first.tag_name().name() == "Fault" {
        let find = |name: &str| {
            first
                .descendants()
                .find(|n| n.is_element() && n.tag_name().name() == name)
                .and_then(|n| n.text())
                .map(|t| clean(t.trim()))
                .unwrap_or_default()
        };
        return Ok(Answer::Fault {
            code: find("errorCode"),
            description: find("errorDescription"),
        });
    }
    Ok(Answer::Values(
        first
            .children()
            .filter(|c| c.is_element())
            .map(|c| {
                (
                    c.tag_name().name().to_string(),
                    c.text().unwrap_or("").to_string(),
                )
            })
            .collect(),
    ))
}

/// XML text with the five special characters escaped (enough for text and attributes).
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

fn soap_envelope(service: &str, action: &str, args: &[(&str, &str)]) -> String {
    let mut inner = String::new();
    for (k, v) in args {
        inner.push_str(&format!("<{k}>{}</{k}>", xml_escape(v)));
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body><u:{action} xmlns:u=\"{}\">{inner}</u:{action}></s:Body></s:Envelope>",
        xml_escape(service)
    )
}

/// The DIDL-Lite metadata of the live stream: a broadcast, so renderers show a title
/// and do not try to seek.
fn didl_lite(stream: &str, title: &str, mime: &str) -> String {
    format!(
        "<DIDL-Lite xmlns=\"urn:schemas-upnp-org:metadata-1-0/DIDL-Lite/\" xmlns:dc=\"http://purl.org/dc/elements/1.1/\" xmlns:upnp=\"urn:schemas-upnp-org:metadata-1-0/upnp/\"><item id=\"moat-radio-live\" parentID=\"0\" restricted=\"1\"><dc:title>{}</dc:title><upnp:class>object.item.audioItem.audioBroadcast</upnp:class><res protocolInfo=\"http-get:*:{}:*\">{}</res></item></DIDL-Lite>",
        xml_escape(title),
        xml_escape(mime),
        xml_escape(stream)
    )
}

/// Searches and describes: the renderers that answer within `wait`, by name.
pub async fn discover(
    interface: Option<Ipv4Addr>,
    wait: Duration,
) -> Result<Vec<Renderer>, CastError> {
    let locations = search(interface, wait).await?;
    let described = futures_util::future::join_all(locations.iter().map(Renderer::describe)).await;
    let mut by_udn: HashMap<String, Renderer> = HashMap::new();
    for r in described {
        match r {
            Ok(r) => {
                by_udn.entry(r.udn.clone()).or_insert(r);
            }
            Err(e) => tracing::debug!("a device answered the search but not its description: {e}"),
        }
    }
    let mut all: Vec<Renderer> = by_udn.into_values().collect();
    all.sort_by_key(|a| a.name.to_lowercase());
    Ok(all)
}

/// The caster `moat serve` keeps: where to search, the stream URL renderers get, and
/// the renderers of the last search.
#[derive(Debug)]
pub struct Caster {
    /// The LAN listener's address.
    lan: SocketAddr,
    known: Mutex<Vec<Arc<Renderer>>>,
}

impl Caster {
    /// A caster for a LAN listener on `lan` (IPv4; a wildcard address searches on the
    /// interface the system picks for multicast).
    pub fn new(lan: SocketAddr) -> Result<Caster, String> {
        if !lan.is_ipv4() {
            return Err(
                "casting needs an IPv4 LAN listener (UPnP renderers are found over IPv4 multicast); set server.lan_listen to an IPv4 address"
                    .into(),
            );
        }
        if lan.ip().is_loopback() {
            return Err(
                "casting needs a LAN listener that speakers can reach; server.lan_listen is a loopback address"
                    .into(),
            );
        }
        Ok(Caster {
            lan,
            known: Mutex::new(Vec::new()),
        })
    }

    fn interface(&self) -> Option<Ipv4Addr> {
        match self.lan.ip() {
            IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
            _ => None,
        }
    }

    /// Searches again and remembers what answered.
    pub async fn discover(&self, wait: Duration) -> Result<Vec<Arc<Renderer>>, CastError> {
        let found: Vec<Arc<Renderer>> = discover(self.interface(), wait)
            .await?
            .into_iter()
            .map(Arc::new)
            .collect();
        *self.known.lock().unwrap_or_else(PoisonError::into_inner) = found.clone();
        Ok(found)
    }

    /// The renderer called `name`, from the last search or a new one.
    pub async fn find(&self, name: &str) -> Result<Arc<Renderer>, CastError> {
        let known = self
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|r| r.is_named(name))
            .cloned();
        if let Some(r) = known {
            return Ok(r);
        }
        self.discover(Duration::from_secs(2))
            .await?
            .into_iter()
            .find(|r| r.is_named(name))
            .ok_or_else(|| CastError::NotFound(name.to_string()))
    }

    /// The stream URL `renderer` is given: the LAN listener's address (or, on a
    /// wildcard listener, this machine's address on the way to the renderer).
    pub fn stream_url(&self, renderer: &Renderer) -> Result<String, CastError> {
        let ip = match self.interface() {
            Some(ip) => ip,
            None => {
                local_address_towards(renderer.address).map_err(|e| CastError::Unreachable {
                    name: renderer.name.clone(),
                    call: "a route",
                    why: e.to_string(),
                })?
            }
        };
        Ok(format!("http://{ip}:{}/radio/live", self.lan.port()))
    }
}

/// The local address the system would send from to reach `to` (no packet is sent: a
/// UDP connect only picks a route).
fn local_address_towards(to: Ipv4Addr) -> std::io::Result<Ipv4Addr> {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    socket.connect((to, 9))?;
    match socket.local_addr()?.ip() {
        IpAddr::V4(ip) => Ok(ip),
        IpAddr::V6(_) => Err(std::io::Error::other("no IPv4 route")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(location: &str) -> Vec<u8> {
        format!("HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=100\r\nLOCATION: {location}\r\nST: {MEDIA_RENDERER}\r\n\r\n").into_bytes()
    }

    #[test]
    fn a_search_answer_is_believed_only_for_its_own_local_address() {
        let from: IpAddr = "192.168.1.20".parse().unwrap();
        assert!(answer_location(&answer("http://192.168.1.20:49494/d.xml"), from).is_some());
        // Another host, loopback, a name, https, credentials, a public address: refused.
        for bad in [
            "http://192.168.1.21:49494/d.xml",
            "http://127.0.0.1:7411/status",
            "http://router.lan/d.xml",
            "https://192.168.1.20/d.xml",
            "http://u:p@192.168.1.20/d.xml",
        ] {
            assert!(answer_location(&answer(bad), from).is_none(), "{bad}");
        }
        let public: IpAddr = "8.8.8.8".parse().unwrap();
        assert!(answer_location(&answer("http://8.8.8.8/d.xml"), public).is_none());
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(answer_location(&answer("http://127.0.0.1/d.xml"), lo).is_none());
        let not_ok = b"HTTP/1.1 404 Not Found\r\nLOCATION: http://192.168.1.20/\r\n\r\n";
        assert!(answer_location(not_ok, from).is_none());
        assert!(answer_location(&[0xff, 0xfe], from).is_none());
    }

    const DESCRIPTION: &str = r#"<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
  <device>
    <deviceType>urn:schemas-upnp-org:device:MediaRenderer:1</deviceType>
    <friendlyName>Kitchen</friendlyName>
    <modelName>GMediaRender</modelName>
    <UDN>uuid:abc</UDN>
    <serviceList>
      <service>
        <serviceType>urn:schemas-upnp-org:service:AVTransport:1</serviceType>
        <controlURL>/upnp/control/rendertransport1</controlURL>
      </service>
      <service>
        <serviceType>urn:schemas-upnp-org:service:RenderingControl:1</serviceType>
        <controlURL>http://10.0.0.99/evil</controlURL>
      </service>
    </serviceList>
  </device>
</root>"#;

    #[test]
    fn a_description_gives_the_renderer_and_keeps_control_on_its_origin() {
        let location = Url::parse("http://10.0.0.5:49494/description.xml").unwrap();
        let d = parse_description(DESCRIPTION.as_bytes(), &location).unwrap();
        assert_eq!(d.name, "Kitchen");
        assert_eq!(d.udn, "uuid:abc");
        assert_eq!(
            d.transport.control.as_str(),
            "http://10.0.0.5:49494/upnp/control/rendertransport1"
        );
        // The RenderingControl that points elsewhere is dropped, not followed.
        assert!(d.rendering.is_none());
        assert!(parse_description(b"<root/>", &location).is_err());
        let dtd = "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY a \"aaaa\">]><root>&a;</root>";
        assert!(parse_description(dtd.as_bytes(), &location).is_err());
    }

    #[test]
    fn soap_answers_and_faults_are_read() {
        let ok = br#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><u:GetTransportInfoResponse xmlns:u="urn:schemas-upnp-org:service:AVTransport:1"><CurrentTransportState>PLAYING</CurrentTransportState></u:GetTransportInfoResponse></s:Body></s:Envelope>"#;
        let Answer::Values(v) = parse_soap_answer(ok).unwrap() else {
            panic!("not values")
        };
        assert_eq!(v["CurrentTransportState"], "PLAYING");
        let fault = br#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode>s:Client</faultcode><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>718</errorCode><errorDescription>Invalid InstanceID</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>"#;
        let Answer::Fault { code, description } = parse_soap_answer(fault).unwrap() else {
            panic!("not a fault")
        };
        assert_eq!(
            (code.as_str(), description.as_str()),
            ("718", "Invalid InstanceID")
        );
    }

    #[test]
    fn metadata_is_escaped_twice_on_its_way_into_soap() {
        let didl = didl_lite(
            "http://10.0.0.1:7412/radio/live",
            "Tom & <Jerry>",
            "audio/mpeg",
        );
        assert!(didl.contains("Tom &amp; &lt;Jerry&gt;"));
        let envelope = soap_envelope(
            "urn:schemas-upnp-org:service:AVTransport:1",
            "SetAVTransportURI",
            &[("CurrentURIMetaData", &didl)],
        );
        // One parse gives back the DIDL-Lite text, a second its title.
        let Answer::Values(v) = parse_soap_answer(envelope.as_bytes()).unwrap() else {
            panic!("not values")
        };
        let inner = roxmltree::Document::parse(&v["CurrentURIMetaData"]).unwrap();
        let title = inner
            .descendants()
            .find(|n| n.tag_name().name() == "title")
            .and_then(|n| n.text())
            .unwrap();
        assert_eq!(title, "Tom & <Jerry>");
    }

    #[test]
    fn renderers_are_named_by_friendly_name_or_udn() {
        let location = Url::parse("http://10.0.0.5:49494/description.xml").unwrap();
        let d = parse_description(DESCRIPTION.as_bytes(), &location).unwrap();
        let r = Renderer {
            name: d.name,
            udn: d.udn,
            model: d.model,
            address: Ipv4Addr::new(10, 0, 0, 5),
            transport: d.transport,
            rendering: d.rendering,
            egress: Egress::for_upstream(&location, CALL_TIMEOUT),
        };
        assert!(r.is_named("kitchen") && r.is_named("uuid:abc") && r.is_named("ABC"));
        assert!(!r.is_named("bedroom"));
    }

    #[test]
    fn a_loopback_or_ipv6_listener_cannot_cast() {
        assert!(Caster::new("127.0.0.1:7412".parse().unwrap()).is_err());
        assert!(Caster::new("[::]:7412".parse().unwrap()).is_err());
        assert!(Caster::new("0.0.0.0:7412".parse().unwrap()).is_ok());
    }
}
