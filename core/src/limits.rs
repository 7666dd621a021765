//! Named limits. Every queue, body and count in OpenChat has one, named with the qualifier
//! last (`..._max`), and the relationships between them are checked at compile time.

/// Longest id (server, channel, group, member, user) accepted from a client.
pub const ID_BYTES_MAX: usize = 128;

/// Server display names, in characters (WIRE.md §2.2).
pub const SERVER_NAME_CHARS_MAX: usize = 100;
/// Server descriptions, in characters (WIRE.md §2.2).
pub const SERVER_DESCRIPTION_CHARS_MAX: usize = 280;

/// Requests waiting for the storage thread; senders wait (asynchronously) beyond this.
pub const STORAGE_QUEUE_DEPTH_MAX: usize = 1024;

/// Body of a JSON request (settings, channel create, ...), in bytes. Upload routes have
/// their own, configured, limit.
pub const JSON_BODY_BYTES_MAX: usize = 256 * 1024;

/// Open HTTP connections; accepting pauses beyond this.
pub const HTTP_CONNECTIONS_MAX: usize = 10_000;

/// Servers listed by the directory.
pub const DIRECTORY_SERVERS_MAX: usize = 1000;

const _: () = assert!(SERVER_DESCRIPTION_CHARS_MAX * 4 + SERVER_NAME_CHARS_MAX * 4 < JSON_BODY_BYTES_MAX);
const _: () = assert!(ID_BYTES_MAX <= 255);
