//! Where a voice room runs in cluster mode, decided without I/O: the registry of live
//! nodes as their heartbeats describe them ([`Registry`], time passed in), and the choice
//! of a new room's owner ([`place`]) by rendezvous hashing weighted by shard count,
//! skipping draining nodes and nodes above the load cap.
//!
//! [`OwnedRooms`] counts the participants of the rooms this node runs, so that it renews
//! their records while they are in use and releases them once empty.
//!
//! The choice only applies to a room nobody holds: once chosen, the owner is recorded
//! (see [`super::cluster`]) and every join follows the record, so nodes coming, going or
//! crossing the cap never split a call into two rooms.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use openchat_core::ChannelId;

/// How often a node publishes its entry.
pub const NODE_HEARTBEAT: Duration = Duration::from_secs(1);
/// A node not heard for this long has left the registry.
pub const NODE_SILENT_MAX: Duration = Duration::from_secs(5);
/// Participants per shard above which a node takes no new rooms (while another can).
pub const PARTICIPANTS_PER_SHARD_CAP: u32 = 400;
/// Nodes the registry keeps.
pub const NODES_MAX: usize = 256;

const _: () = assert!(NODE_SILENT_MAX.as_secs() >= 3 * NODE_HEARTBEAT.as_secs());

/// A node's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    pub node: String,
    /// Media shards (cores) it runs; 0 when voice is off there.
    pub shards: u32,
    pub participants: u32,
    /// Shutting down: keeps its calls for the grace period, takes no new rooms.
    pub draining: bool,
}

impl NodeInfo {
    fn above_cap(&self) -> bool {
        self.participants >= self.shards.saturating_mul(PARTICIPANTS_PER_SHARD_CAP)
    }
}

/// The live nodes, as last heard.
#[derive(Debug, Default)]
pub struct Registry {
    nodes: HashMap<String, (NodeInfo, Instant)>,
    /// When this node began to listen: until [`NODE_SILENT_MAX`] after it, a node never
    /// heard may simply not have spoken yet, and is not judged dead.
    listening_since: Option<Instant>,
}

impl Registry {
    /// This node started (or restarted) listening to heartbeats.
    pub fn listening(&mut self, now: Instant) {
        self.listening_since.get_or_insert(now);
    }

    pub fn observe(&mut self, info: NodeInfo, now: Instant) {
        if self.nodes.len() >= NODES_MAX && !self.nodes.contains_key(&info.node) {
            return;
        }
        self.nodes.insert(info.node.clone(), (info, now));
    }

    /// A node said it left (its entry was deleted).
    pub fn forget(&mut self, node: &str) {
        self.nodes.remove(node);
    }

    /// Whether `node` counts as alive: heard within [`NODE_SILENT_MAX`], or never heard
    /// while this node has not listened that long yet.
    pub fn is_live(&self, node: &str, now: Instant) -> bool {
        match self.nodes.get(node) {
            Some((_, heard)) => now.saturating_duration_since(*heard) <= NODE_SILENT_MAX,
            None => self
                .listening_since
                .is_none_or(|since| now.saturating_duration_since(since) <= NODE_SILENT_MAX),
        }
    }

    /// The nodes heard within [`NODE_SILENT_MAX`].
    pub fn live(&self, now: Instant) -> Vec<NodeInfo> {
        let mut live: Vec<NodeInfo> = self
            .nodes
            .values()
            .filter(|(_, heard)| now.saturating_duration_since(*heard) <= NODE_SILENT_MAX)
            .map(|(info, _)| info.clone())
            .collect();
        live.sort_by(|a, b| a.node.cmp(&b.node));
        live
    }

    /// Nobody is judged by a time this node could not hear (its NATS connection was down).
    pub fn heard_all(&mut self, now: Instant) {
        for (_, heard) in self.nodes.values_mut() {
            *heard = now;
        }
    }
}

/// 64-bit FNV-1a of the node and the channel.
fn hash(node: &str, channel: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node.bytes().chain([0xff]).chain(channel.bytes()) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV mixes its last bytes weakly; finish with a murmur3-style avalanche.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// The owner of a new room for `channel` among `nodes`: weighted rendezvous (score
/// `shards / -ln(u)`, `u` the node-and-channel hash in (0, 1)) over the nodes with shards
/// that are not draining and below the load cap; when every such node is above the cap,
/// over all of them. `None` when no node can take it.
pub fn place<'a>(channel: &str, nodes: &'a [NodeInfo]) -> Option<&'a NodeInfo> {
    let open: Vec<&NodeInfo> = nodes.iter().filter(|n| n.shards > 0 && !n.draining).collect();
    let below: Vec<&NodeInfo> = open.iter().copied().filter(|n| !n.above_cap()).collect();
    let candidates = if below.is_empty() { open } else { below };
    candidates.into_iter().max_by(|a, b| {
        let score = |n: &NodeInfo| {
            let unit = (hash(&n.node, channel) >> 11) as f64 / (1u64 << 53) as f64;
            let unit = unit.clamp(f64::MIN_POSITIVE, 1.0 - f64::EPSILON);
            f64::from(n.shards) / -unit.ln()
        };
        score(a).total_cmp(&score(b)).then_with(|| b.node.cmp(&a.node))
    })
}

/// This node's rooms in cluster mode: participants per channel it admitted.
#[derive(Debug, Default)]
pub struct OwnedRooms {
    rooms: HashMap<ChannelId, usize>,
}

impl OwnedRooms {
    pub fn joined(&mut self, channel: &ChannelId) {
        *self.rooms.entry(channel.clone()).or_default() += 1;
    }

    pub fn left(&mut self, channel: &ChannelId) {
        if let Some(count) = self.rooms.get_mut(channel) {
            *count = count.saturating_sub(1);
        }
    }

    /// The rooms with participants, and those that emptied (forgotten now).
    pub fn take_state(&mut self) -> (Vec<ChannelId>, Vec<ChannelId>) {
        let held = self
            .rooms
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(c, _)| c.clone())
            .collect();
        let emptied: Vec<ChannelId> = self
            .rooms
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(c, _)| c.clone())
            .collect();
        for channel in &emptied {
            self.rooms.remove(channel);
        }
        (held, emptied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, shards: u32) -> NodeInfo {
        NodeInfo {
            node: name.into(),
            shards,
            participants: 0,
            draining: false,
        }
    }

    fn channels() -> impl Iterator<Item = String> {
        (0..3000).map(|n| format!("vc_{n}"))
    }

    #[test]
    fn rooms_spread_by_shard_count_and_a_leaving_node_moves_only_its_own() {
        let nodes = vec![node("a", 1), node("b", 2), node("c", 1)];
        let mut counts: HashMap<String, usize> = HashMap::new();
        let mut owners = HashMap::new();
        for channel in channels() {
            let owner = place(&channel, &nodes).unwrap().node.clone();
            *counts.entry(owner.clone()).or_default() += 1;
            owners.insert(channel, owner);
        }
        // b has half the shards: about half the rooms (3000 rooms: well inside ±5 %).
        let share = |n: &str| counts[n] as f64 / 3000.0;
        assert!((share("b") - 0.5).abs() < 0.05, "{counts:?}");
        assert!((share("a") - 0.25).abs() < 0.05, "{counts:?}");
        // Without c, only c's rooms move.
        let without_c = vec![node("a", 1), node("b", 2)];
        for (channel, owner) in &owners {
            let now = &place(channel, &without_c).unwrap().node;
            if owner != "c" {
                assert_eq!(now, owner, "{channel} moved although its node stayed");
            }
        }
    }

    #[test]
    fn draining_full_and_voiceless_nodes_take_no_new_rooms_unless_all_are_full() {
        let mut full = node("full", 1);
        full.participants = PARTICIPANTS_PER_SHARD_CAP;
        let mut draining = node("draining", 4);
        draining.draining = true;
        let nodes = vec![
            full.clone(),
            draining.clone(),
            node("voiceless", 0),
            node("open", 1),
        ];
        for channel in channels().take(200) {
            assert_eq!(place(&channel, &nodes).unwrap().node, "open");
        }
        // Everyone full: the load cap no longer decides, but draining still excludes.
        let mut also_full = node("open", 1);
        also_full.participants = PARTICIPANTS_PER_SHARD_CAP + 1;
        let nodes = vec![full, draining.clone(), also_full];
        let picked: std::collections::HashSet<String> = channels()
            .take(200)
            .map(|c| place(&c, &nodes).unwrap().node.clone())
            .collect();
        assert!(picked.contains("full") && picked.contains("open") && !picked.contains("draining"));
        assert!(place("vc_x", &[draining]).is_none());
    }

    #[test]
    fn an_owned_room_is_held_while_it_has_participants_and_released_once_empty() {
        let channel = ChannelId::parse("vc_1").unwrap();
        let mut owned = OwnedRooms::default();
        owned.joined(&channel);
        owned.joined(&channel);
        owned.left(&channel);
        assert_eq!(owned.take_state(), (vec![channel.clone()], vec![]));
        owned.left(&channel);
        assert_eq!(owned.take_state(), (vec![], vec![channel]));
        assert_eq!(owned.take_state(), (vec![], vec![]));
    }

    #[test]
    fn a_silent_node_leaves_the_registry_unless_we_were_the_ones_cut_off() {
        let t0 = Instant::now();
        let mut registry = Registry::default();
        registry.listening(t0);
        assert!(
            registry.is_live("c", t0),
            "not heard yet, but we only just began to listen"
        );
        registry.observe(node("a", 1), t0);
        registry.observe(node("b", 1), t0);
        let later = t0 + NODE_SILENT_MAX + Duration::from_secs(1);
        registry.observe(node("a", 1), later);
        assert_eq!(registry.live(later), [node("a", 1)]);
        assert!(!registry.is_live("b", later));
        assert!(
            !registry.is_live("c", later),
            "never heard, and we listened long enough"
        );
        registry.heard_all(later);
        assert!(registry.is_live("b", later));
        registry.forget("b");
        assert!(!registry.is_live("b", later));
    }
}
