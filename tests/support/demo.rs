//! Demo nodes (`webcluster::demo_node`) for tests that need small,
//! controllable nodes in-process: on a tokio runtime of their own, alive as
//! long as the `DemoNodes` value; stopped one by one with `stop`.

use std::net::SocketAddr;
use std::time::Duration;

use webcluster::demo_node::{DemoNode, DemoNodeConfig};

pub struct DemoNodes {
    rt: tokio::runtime::Runtime,
    nodes: Vec<Option<DemoNode>>,
}

impl DemoNodes {
    /// One node per name on 127.0.0.1 (ephemeral ports), each with
    /// `workers` workers and `delay` added to every page.
    pub fn start(names: &[&str], workers: usize, delay: Duration) -> DemoNodes {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let nodes = names
            .iter()
            .map(|name| {
                Some(
                    rt.block_on(DemoNode::start(DemoNodeConfig {
                        name: name.to_string(),
                        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                        workers,
                        delay,
                    }))
                    .expect("demo node"),
                )
            })
            .collect();
        DemoNodes { rt, nodes }
    }

    pub fn node(&self, i: usize) -> &DemoNode {
        self.nodes[i].as_ref().expect("node still running")
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.node(i).addr()
    }

    /// Stop node `i` (closes its listener and connections).
    pub fn stop(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            self.rt.block_on(n.shutdown());
        }
    }
}

impl Drop for DemoNodes {
    fn drop(&mut self) {
        for n in self.nodes.iter_mut().filter_map(Option::take) {
            self.rt.block_on(n.shutdown());
        }
    }
}
