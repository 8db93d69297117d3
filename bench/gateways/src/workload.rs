//! The workloads: what a client sends, in which format, to an upstream of which format.

use std::time::Duration;

use crate::load::ClientApi;
use crate::upstream::Shape;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Workload {
    /// Short name, used in tables, file names and `--workloads`.
    pub name: &'static str,
    pub title: &'static str,
    pub client: ClientApi,
    pub upstream: ClientApi,
    pub stream: bool,
    pub request_bytes: usize,
    pub shape: Shape,
}

impl Workload {
    pub(crate) fn translated(&self) -> bool {
        self.client != self.upstream
    }

    /// The text a whole answer must at least carry.
    pub(crate) fn expect_bytes(&self) -> usize {
        if self.stream { 0 } else { self.shape.bytes }
    }
}

const PACED: Shape = Shape {
    deltas: 64,
    gap: Duration::from_millis(20),
    bytes: 32,
    latency: Duration::ZERO,
};

pub(crate) const ALL: [Workload; 7] = [
    Workload {
        name: "small",
        title: "OpenAI, whole, small bodies",
        client: ClientApi::Openai,
        upstream: ClientApi::Openai,
        stream: false,
        request_bytes: 0,
        shape: Shape {
            deltas: 0,
            gap: Duration::ZERO,
            bytes: 32,
            latency: Duration::ZERO,
        },
    },
    Workload {
        name: "large",
        title: "OpenAI, whole, ~150 KB request and ~150 KB answer",
        client: ClientApi::Openai,
        upstream: ClientApi::Openai,
        stream: false,
        request_bytes: 150_000,
        shape: Shape {
            deltas: 0,
            gap: Duration::ZERO,
            bytes: 150_000,
            latency: Duration::ZERO,
        },
    },
    Workload {
        name: "stream",
        title: "OpenAI, streamed, 64 deltas 20 ms apart",
        client: ClientApi::Openai,
        upstream: ClientApi::Openai,
        stream: true,
        request_bytes: 0,
        shape: PACED,
    },
    Workload {
        name: "oai-to-ant",
        title: "OpenAI client to an Anthropic upstream, translated, streamed 64x20 ms",
        client: ClientApi::Openai,
        upstream: ClientApi::Anthropic,
        stream: true,
        request_bytes: 0,
        shape: PACED,
    },
    Workload {
        name: "ant-to-oai",
        title: "Anthropic client to an OpenAI upstream, translated, streamed 64x20 ms",
        client: ClientApi::Anthropic,
        upstream: ClientApi::Openai,
        stream: true,
        request_bytes: 0,
        shape: PACED,
    },
    Workload {
        name: "resp-to-oai",
        title: "Responses API client to an OpenAI upstream, translated, streamed 64x20 ms",
        client: ClientApi::Responses,
        upstream: ClientApi::Openai,
        stream: true,
        request_bytes: 0,
        shape: PACED,
    },
    Workload {
        name: "resp-to-ant",
        title: "Responses API client to an Anthropic upstream, translated, streamed 64x20 ms",
        client: ClientApi::Responses,
        upstream: ClientApi::Anthropic,
        stream: true,
        request_bytes: 0,
        shape: PACED,
    },
];

pub(crate) fn by_name(name: &str) -> Option<Workload> {
    ALL.iter().copied().find(|w| w.name == name)
}
