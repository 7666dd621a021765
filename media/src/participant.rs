//! Who is in a room and over which connection: the participant id and the leg (one of a
//! participant's two PeerConnections). The room and the SFU both speak these.

/// A participant id (a UUID v4 string chosen by the front-end).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub String);

impl std::fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which of a participant's two PeerConnections (WIRE.md §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    Publish,
    Subscribe,
}

impl Leg {
    pub fn as_str(self) -> &'static str {
        match self {
            Leg::Publish => "publish",
            Leg::Subscribe => "subscribe",
        }
    }
}
