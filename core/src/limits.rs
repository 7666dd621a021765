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

/// Members listed by `GET /servers/{id}/members`.
pub const MEMBERS_LIST_MAX: usize = 1000;

/// Servers listed by the directory.
pub const DIRECTORY_SERVERS_MAX: usize = 1000;

/// Channel, category and display names, in characters.
pub const CHANNEL_NAME_CHARS_MAX: usize = 100;
/// Channels plus categories of one server.
pub const SERVER_CHANNELS_MAX: usize = 500;
/// Messages returned by one history page (the client asks for 150).
pub const MESSAGES_PAGE_MAX: usize = 500;
/// Messages returned when the client gives no `limit` (Go's default).
pub const MESSAGES_PAGE_DEFAULT: usize = 100;
/// Attachments on one message.
pub const ATTACHMENTS_PER_MESSAGE_MAX: usize = 4;
/// Avatar upload, in bytes (WIRE.md §2.5).
pub const AVATAR_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Avatar width and height, in pixels.
pub const AVATAR_SIDE_PX_MAX: u32 = 1024;
/// UIDs in one `profiles:batch` request.
pub const PROFILES_BATCH_MAX: usize = 100;
/// Mention candidates returned by one resolve.
pub const MENTION_RESULTS_MAX: usize = 25;
/// Reply previews, in characters (WIRE.md §2.4).
pub const REPLY_PREVIEW_CHARS_MAX: usize = 220;
/// The subscribe receive policy (capabilities `rtc.subscribe_receive_policy`): at most this
/// many video and audio tracks forwarded to one participant.
pub const SUBSCRIBE_VIDEO_TRACKS_MAX: usize = 8;
pub const SUBSCRIBE_AUDIO_TRACKS_MAX: usize = 16;

/// How long a server-creation ownership claim token stays valid, in seconds.
pub const OWNERSHIP_CLAIM_TTL_SECONDS: i64 = 24 * 3600;

const _: () = assert!(MESSAGES_PAGE_DEFAULT <= MESSAGES_PAGE_MAX);
const _: () = assert!(SERVER_DESCRIPTION_CHARS_MAX * 4 + SERVER_NAME_CHARS_MAX * 4 < JSON_BODY_BYTES_MAX);
const _: () = assert!(ID_BYTES_MAX <= 255);
