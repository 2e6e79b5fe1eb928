//! webcluster: a front proxy for clusters of web servers that balances each
//! request by the live load the nodes report themselves (Apache
//! `mod_status`, nginx `stub_status`).
//!
//! Data flows one way:
//!
//! ```text
//! config file --config::load--> Config --Cluster::new/apply--> Cluster (groups, nodes, live state)
//!                                                                ^            |            |
//!                                      status::scraper writes ---+   proxy picks a node   admin renders
//! ```
//!
//! - [`config`]: the file format and its validation into the internal model;
//! - [`cluster`]: groups, nodes and their live state behind one atomic pointer;
//! - [`status`]: parsing the nodes' status pages and polling them;
//! - [`balance`]: choosing a node among the usable ones;
//! - [`clock`]: the request path's time, read once per poll of a connection;
//! - [`proxy`]: the path of a request (its own HTTP/1 framing and request loop,
//!   run as a pingora service), the connection pool to the nodes;
//! - [`admin`]: status page, JSON, `?auto`, metrics and the node control API
//!   ([`control`] is its client, `webcluster node`);
//! - [`listener`]: the visitor listeners and their accept loop;
//! - [`tls`]: HTTPS listeners: certificates by SNI, handshakes, reload;
//! - [`reload`], [`server`]: SIGHUP reload, process lifecycle;
//! - [`demo`], [`demo_node`]: the embedded demo cluster;
//! - [`alloc`]: the global allocator the binary uses (mimalloc).

pub mod access_log;
pub mod admin;
pub mod alloc;
pub mod balance;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod control;
pub mod demo;
pub mod demo_node;
pub mod descriptors;
pub mod discovery;
pub mod listener;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod status;
pub mod tls;
