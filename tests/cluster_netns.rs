//! Three `openchatd` nodes, each in its own network namespace with its own address (veth
//! pairs on a bridge this test creates), on one Postgres database and one NATS server:
//! a call whose signaling reaches two different nodes runs on one node, and media flows to
//! that node's own address, so a node advertising the wrong address fails the test.
//! Postgres and NATS stay on the host's loopback; the test forwards them to the bridge.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use support::peer::{close_code, join, mint, rooms_on};
use support::{NatsServer, PgDatabase, Server, binary, client, eventually, in_ci, postgres_url};
use tokio::net::{TcpListener, TcpStream};

const NODES: usize = 3;

/// The bridge, namespaces and veth pairs of one run; removed when dropped.
struct Net {
    bridge: String,
    namespaces: Vec<String>,
    subnet: u8,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

impl Net {
    fn create() -> Result<Self, String> {
        let pid = std::process::id() % 100_000;
        let mut net = Net {
            bridge: format!("ocbr{pid}"),
            namespaces: Vec::new(),
            subnet: (pid % 200 + 20) as u8,
        };
        ip(&["link", "add", &net.bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{}/24", net.host()), "dev", &net.bridge])?;
        ip(&["link", "set", &net.bridge, "up"])?;
        for i in 0..NODES {
            let ns = format!("ocns{pid}_{i}");
            ip(&["netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            let (host_end, ns_end) = (format!("och{pid}{i}"), format!("ocp{pid}{i}"));
            ip(&["link", "add", &host_end, "type", "veth", "peer", "name", &ns_end])?;
            ip(&["link", "set", &ns_end, "netns", &ns])?;
            ip(&["link", "set", &host_end, "master", &net.bridge])?;
            ip(&["link", "set", &host_end, "up"])?;
            ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
            let addr = format!("{}/24", net.node(i));
            ip(&["netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", &ns_end])?;
            ip(&["netns", "exec", &ns, "ip", "link", "set", &ns_end, "up"])?;
        }
        Ok(net)
    }

    fn host(&self) -> IpAddr {
        format!("10.231.{}.1", self.subnet).parse().unwrap()
    }

    fn node(&self, i: usize) -> IpAddr {
        format!("10.231.{}.{}", self.subnet, 11 + i).parse().unwrap()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = ip(&["netns", "delete", ns]);
        }
        let _ = ip(&["link", "delete", &self.bridge]);
    }
}

/// Forwards connections to `listen` (on the bridge) to `target` (on the host's loopback).
async fn forward(listen: IpAddr, target: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind((listen, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    addr
}

/// Starts node `i` inside its namespace, listening on its own address.
fn start_node(net: &Net, i: usize, dir: &std::path::Path, database: &str, nats: &str) -> Server {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", &net.namespaces[i], &binary()]);
    for (key, _) in std::env::vars() {
        if key.starts_with("OPENCHAT_") {
            command.env_remove(key);
        }
    }
    command
        .env("OPENCHAT_HTTP_ADDR", format!("{}:8080", net.node(i)))
        .env("OPENCHAT_MEDIA_PORT_BASE", "0")
        .env("OPENCHAT_MEDIA_PUBLIC_IP", net.node(i).to_string())
        .env("OPENCHAT_DATA_DIR", dir)
        .env("OPENCHAT_DATABASE_URL", database)
        .env("OPENCHAT_NATS_URL", nats)
        .env("OPENCHAT_NODE_ID", format!("node-{i}"))
        .env("OPENCHAT_LOG_FORMAT", "json")
        .env("OPENCHAT_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    Server::spawn(command, dir)
}

/// The one node that runs a call, by the rooms its metrics count.
async fn owner_of(nodes: &[Server]) -> usize {
    let mut owners = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        if rooms_on(node).await > 0.0 {
            owners.push(i);
        }
    }
    assert_eq!(owners.len(), 1, "the call runs on exactly one node: {owners:?}");
    owners[0]
}

/// The address the SFU put in an answer's candidate.
fn candidate_ip(answer: &Value) -> IpAddr {
    let sdp = answer["payload"]["sdp"].as_str().unwrap();
    let line = sdp
        .lines()
        .find(|l| l.starts_with("a=candidate"))
        .expect("a candidate");
    line.split_whitespace().nth(4).unwrap().parse().unwrap()
}

#[test]
fn a_call_across_namespaced_nodes_runs_on_one_node_and_media_reaches_its_own_address() {
    let Some(admin) = postgres_url() else { return };
    let net = match Net::create() {
        Ok(net) => net,
        Err(err) => {
            assert!(!in_ci(), "CI=true needs network namespaces: {err}");
            eprintln!("SKIP: cannot create network namespaces: {err}");
            return;
        }
    };
    let Some(nats) = NatsServer::start() else { return };
    let db = PgDatabase::create(&admin);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Postgres and NATS as the namespaces reach them: through the bridge.
    let pg: tokio_postgres::Config = db.url.parse().unwrap();
    let pg_port = pg.get_ports().first().copied().unwrap_or(5432);
    let pg_forward = runtime.block_on(forward(net.host(), SocketAddr::from(([127, 0, 0, 1], pg_port))));
    let nats_forward = runtime.block_on(forward(net.host(), SocketAddr::from(([127, 0, 0, 1], nats.port))));
    let db_name = pg.get_dbname().unwrap();
    let database = format!("postgres://postgres@{pg_forward}/{db_name}");
    let nats_url = format!("nats://{nats_forward}");
    let dirs: Vec<tempfile::TempDir> = (0..NODES).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<Server> = (0..NODES)
        .map(|i| start_node(&net, i, dirs[i].path(), &database, &nats_url))
        .collect();
    for node in &nodes {
        eventually("a namespaced node ready", || {
            client()
                .get(node.url("/readyz"))
                .send()
                .is_ok_and(|r| r.status() == 200)
        });
    }
    let channel = "vc_general";
    let (owner, first, second) = runtime.block_on(async {
        // Signaling through node 0 and node 1: one room, on one node.
        let (mut first, joined) = join(&nodes[0], &mint(&nodes[0], channel, "uid_nia").await).await;
        assert_eq!(joined["type"], "rtc.joined", "{joined}");
        let (mut second, joined) = join(&nodes[1], &mint(&nodes[1], channel, "uid_ola").await).await;
        assert_eq!(
            joined["payload"]["participants"].as_array().unwrap().len(),
            1,
            "{joined}"
        );
        let owner = owner_of(&nodes).await;
        // Media goes to the owner's own address, from peers on the host side of the bridge.
        let (publish, subscribe) =
            support::peer::audio_flows(&mut first, &mut second, channel, net.host()).await;
        for answer in [&publish, &subscribe] {
            assert_eq!(candidate_ip(answer), net.node(owner), "{answer}");
        }
        (owner, first, second)
    });
    // SIGKILL of the call's node: a socket relayed through another node closes with 1012
    // (no rtc.error); rejoining through the survivors makes the room again on one of them,
    // and media then goes to that node's own address.
    let mut nodes: Vec<Option<Server>> = nodes.into_iter().map(Some).collect();
    nodes[owner].take().unwrap().kill_hard();
    let survivors: Vec<&Server> = nodes.iter().flatten().collect();
    runtime.block_on(async {
        for (node, mut ws) in [(0, first), (1, second)] {
            let (code, errored) = close_code(&mut ws).await;
            if node != owner {
                assert_eq!(code, Some(1012), "a relayed socket of node {node}");
                assert!(!errored, "an rtc.error came before the close");
            }
        }
        let (mut first, joined) = join(survivors[0], &mint(survivors[0], channel, "uid_nia").await).await;
        assert_eq!(joined["payload"]["participants"], json!([]), "{joined}");
        let (mut second, joined) = join(survivors[1], &mint(survivors[1], channel, "uid_ola").await).await;
        assert_eq!(
            joined["payload"]["participants"].as_array().unwrap().len(),
            1,
            "{joined}"
        );
        let (publish, _) = support::peer::audio_flows(&mut first, &mut second, channel, net.host()).await;
        let moved = candidate_ip(&publish);
        assert_ne!(moved, net.node(owner), "the room moved off the dead node");
        assert!((0..NODES).any(|i| i != owner && net.node(i) == moved), "{moved}");
    });
    drop(nodes);
    drop(runtime);
    drop(db);
    drop(nats);
    drop(net);
}
