//! Name resolution that cannot be rebound: a name is resolved once per connection, every
//! address it returns is judged by the policy, and the connector connects only to the
//! addresses handed back from here (it never resolves again).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;

use super::policy::{Policy, Refusal};

/// A boxed future, as resolvers return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Turns a host name into addresses.
pub trait Resolve: Send + Sync + 'static {
    /// All addresses of `host` (a DNS name, never an address literal).
    fn resolve(&self, host: &str) -> BoxFuture<io::Result<Vec<IpAddr>>>;
}

/// The operating system's resolver (`getaddrinfo`, off the async threads).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str) -> BoxFuture<io::Result<Vec<IpAddr>>> {
        let host = host.to_string();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// A resolver that answers from a table, for tests and dry runs: each name has a list of
/// answers given in turn (the last one repeats), and every question is counted.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    inner: Arc<Mutex<StaticInner>>,
}

#[derive(Debug, Default)]
struct StaticInner {
    answers: HashMap<String, Vec<Vec<IpAddr>>>,
    asked: HashMap<String, usize>,
}

impl StaticResolver {
    /// An empty table: every name fails to resolve.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next answer for `host`.
    pub fn answer(self, host: &str, addrs: &[IpAddr]) -> Self {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .answers
            .entry(host.to_ascii_lowercase())
            .or_default()
            .push(addrs.to_vec());
        self
    }

    /// How often `host` was asked for.
    pub fn asked(&self, host: &str) -> usize {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.asked.get(host).copied().unwrap_or(0)
    }
}

impl Resolve for StaticResolver {
    fn resolve(&self, host: &str) -> BoxFuture<io::Result<Vec<IpAddr>>> {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = {
            let asked = inner.asked.entry(host.to_string()).or_insert(0);
            *asked += 1;
            *asked - 1
        };
        let answer = inner
            .answers
            .get(host)
            .and_then(|list| list.get(n).or(list.last()).cloned())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such name"));
        Box::pin(std::future::ready(answer))
    }
}

/// Resolves `host` and judges every address; the addresses returned are the only ones
/// that may be connected to.
pub async fn resolve_checked(
    policy: &Policy,
    resolver: &dyn Resolve,
    host: &str,
) -> Result<Vec<IpAddr>, Refusal> {
    let addrs = resolver.resolve(host).await.map_err(|e| Refusal::Dns {
        host: host.into(),
        reason: dns_reason(&e),
    })?;
    policy.check_resolved(host, &addrs)?;
    Ok(addrs)
}

fn dns_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such name".into(),
        _ => e.to_string(),
    }
}

/// The resolver handed to hyper's connector: [`resolve_checked`] as a tower service.
#[derive(Clone)]
pub struct CheckingResolver {
    policy: Arc<Policy>,
    resolver: Arc<dyn Resolve>,
}

impl CheckingResolver {
    /// Resolves with `resolver`, judges with `policy`.
    pub fn new(policy: Arc<Policy>, resolver: Arc<dyn Resolve>) -> Self {
        Self { policy, resolver }
    }
}

impl tower_service::Service<Name> for CheckingResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Refusal;
    type Future = BoxFuture<Result<Self::Response, Refusal>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = name.as_str().trim_end_matches('.');
            let addrs = resolve_checked(&this.policy, &*this.resolver, host).await?;
            // Port 0: the connector fills in the URL's port.
            Ok(addrs
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect::<Vec<_>>()
                .into_iter())
        })
    }
}

/// The policy refusal somewhere in an error's source chain, if the error is one.
pub fn find_refusal<'a>(mut e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refusal> {
    loop {
        if let Some(r) = e.downcast_ref::<Refusal>() {
            return Some(r);
        }
        e = e.source()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_address_is_judged_and_the_first_answer_is_the_only_one_used() {
        let public: IpAddr = "93.184.216.34".parse().unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let policy = Policy::default();
        let mixed = StaticResolver::new().answer("mixed.example", &[public, lo]);
        let r = resolve_checked(&policy, &mixed, "mixed.example")
            .await
            .unwrap_err();
        assert_eq!(r.rule(), "blocked-address:loopback");

        let rebinding = StaticResolver::new()
            .answer("rebind.example", &[public])
            .answer("rebind.example", &[lo]);
        let first = resolve_checked(&policy, &rebinding, "rebind.example").await;
        assert_eq!(first.unwrap(), vec![public]);
        let second = resolve_checked(&policy, &rebinding, "rebind.example").await;
        assert_eq!(second.unwrap_err().rule(), "blocked-address:loopback");

        let none = StaticResolver::new();
        assert_eq!(
            resolve_checked(&policy, &none, "nx.example")
                .await
                .unwrap_err()
                .code(),
            "dns"
        );
    }
}
