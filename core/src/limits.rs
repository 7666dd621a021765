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
/// Message attachment width and height, in pixels, and pixel count (width × height): an
/// image that decodes to more would cost every client that shows it hundreds of megabytes.
pub const ATTACHMENT_WIDTH_PX_MAX: u32 = 16_384;
pub const ATTACHMENT_HEIGHT_PX_MAX: u32 = 16_384;
pub const ATTACHMENT_PIXELS_MAX: u64 = 40_000_000;
/// Avatar upload, in bytes (WIRE.md §2.5).
pub const AVATAR_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Avatar width and height, in pixels.
pub const AVATAR_SIDE_PX_MAX: u32 = 1024;
/// UIDs in one `profiles:batch` request.
pub const PROFILES_BATCH_MAX: usize = 100;
/// Mention candidates returned by one resolve.
pub const MENTION_RESULTS_MAX: usize = 25;
/// Mentions kept per message (the rest of a body is plain text).
pub const MENTIONS_PER_MESSAGE_MAX: usize = 50;
/// People a message's mentions are matched against: the server's members and the
/// channel's authors, at most this many.
pub const MENTION_ROSTER_MAX: usize = 5000;
/// Reply previews, in characters (WIRE.md §2.4).
pub const REPLY_PREVIEW_CHARS_MAX: usize = 220;
/// The subscribe receive policy (capabilities `rtc.subscribe_receive_policy`): at most this
/// many video and audio tracks forwarded to one participant.
pub const SUBSCRIBE_VIDEO_TRACKS_MAX: usize = 8;
pub const SUBSCRIBE_AUDIO_TRACKS_MAX: usize = 16;

/// How long a server-creation ownership claim token stays valid, in seconds.
pub const OWNERSHIP_CLAIM_TTL_SECONDS: i64 = 24 * 3600;

const _: () = assert!(MESSAGES_PAGE_DEFAULT <= MESSAGES_PAGE_MAX);
const _: () =
    assert!(ATTACHMENT_PIXELS_MAX <= ATTACHMENT_WIDTH_PX_MAX as u64 * ATTACHMENT_HEIGHT_PX_MAX as u64);
const _: () = assert!((AVATAR_SIDE_PX_MAX as u64) * (AVATAR_SIDE_PX_MAX as u64) <= ATTACHMENT_PIXELS_MAX);
const _: () = assert!(SERVER_DESCRIPTION_CHARS_MAX * 4 + SERVER_NAME_CHARS_MAX * 4 < JSON_BODY_BYTES_MAX);
const _: () = assert!(ID_BYTES_MAX <= 255);

// End-to-end encryption (E2EE.md §2; all sizes are of the decoded bytes).
/// A commit payload.
pub const COMMIT_PAYLOAD_BYTES_MAX: usize = 256 * 1024;
/// A commit signature, a device key, a nonce or AAD.
pub const E2EE_SMALL_BLOB_BYTES_MAX: usize = 4 * 1024;
/// One KeyPackage, and KeyPackages per publish call.
pub const KEY_PACKAGE_BYTES_MAX: usize = 16 * 1024;
pub const KEY_PACKAGES_PER_CALL_MAX: usize = 100;
/// One key envelope (a Welcome or a wrapped key), and envelopes per publish call.
pub const KEY_ENVELOPE_BYTES_MAX: usize = 64 * 1024;
pub const KEY_ENVELOPES_PER_CALL_MAX: usize = 256;
/// Envelopes queued for one device.
pub const KEY_ENVELOPE_QUEUE_MAX: usize = 10_000;
/// Envelopes returned by one fetch (default and most).
pub const KEY_ENVELOPES_PAGE_DEFAULT: usize = 100;
pub const KEY_ENVELOPES_PAGE_MAX: usize = 500;
/// An encrypted key backup.
pub const KEY_BACKUP_BYTES_MAX: usize = 1024 * 1024;
/// Epoch rotations one member may make in one channel at once, and then one per interval:
/// each rotation makes every member's next post `epoch_stale` until their client catches up.
pub const EPOCH_ROTATIONS_BURST_MAX: u32 = 3;
pub const EPOCH_ROTATION_INTERVAL_SECONDS: u64 = 120;
/// Devices per user (not counting revoked ones).
pub const DEVICES_PER_USER_MAX: usize = 10;
/// A device link request lives this long, in seconds.
pub const DEVICE_LINK_TTL_SECONDS: i64 = 600;
/// KeyPackage claims per caller per minute.
pub const KEY_CLAIMS_PER_MINUTE: u32 = 30;
/// History pages of E2EE.md (`/history`): default and most.
pub const HISTORY_PAGE_DEFAULT: usize = 50;
pub const HISTORY_PAGE_MAX: usize = 200;
/// Challenges live this long; sessions this long (seconds).
pub const AUTH_CHALLENGE_TTL_SECONDS: i64 = 60;
pub const SESSION_TTL_SECONDS: i64 = 12 * 3600;
/// The largest body of a key route: a full KeyPackage or envelope batch, base64url-encoded.
pub const KEY_BODY_BYTES_MAX: usize = 24 * 1024 * 1024;

const _: () = assert!(KEY_PACKAGE_BYTES_MAX * KEY_PACKAGES_PER_CALL_MAX * 4 / 3 < KEY_BODY_BYTES_MAX);
const _: () = assert!(KEY_ENVELOPE_BYTES_MAX * KEY_ENVELOPES_PER_CALL_MAX * 4 / 3 < KEY_BODY_BYTES_MAX);
const _: () = assert!(HISTORY_PAGE_DEFAULT <= HISTORY_PAGE_MAX);
