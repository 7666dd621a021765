//! The capabilities document (WIRE.md §3), built from what this build actually serves.
//!
//! Rule: a feature flag is true only once the feature works end to end. Blocks the client
//! treats as optional are absent until their features exist (`rtc` still is); the objects it requires (`transport`, `features`, `limits`, `security`) are
//! always present. Limits report the configured values.

use openchat_core::UidPolicy;
use openchat_core::limits::{
    ATTACHMENT_HEIGHT_PX_MAX, ATTACHMENT_PIXELS_MAX, ATTACHMENT_WIDTH_PX_MAX, AVATAR_BYTES_MAX,
    AVATAR_SIDE_PX_MAX,
};
use openchat_core::profile::{DISPLAY_NAME_CHARS_MAX, DISPLAY_NAME_CHARS_MIN};
use openchat_storage::InstanceRecord;
use serde_json::{Value, json};

use crate::state::FrontConfig;

/// The API version the client v0.0.7 was written against.
pub const API_VERSION: &str = "2026-02-14";

/// The instance name when neither the store nor the primary server provides one.
pub const FALLBACK_SERVER_NAME: &str = "OpenChat";

/// Builds the document. `server_id` is the primary community (WIRE.md §0.1); on a store
/// with no server at all (`OPENCHAT_SEED=none`, nothing created yet) it is empty.
/// What the `rtc` block needs; present only when voice signaling runs.
#[derive(Debug, Clone)]
pub struct RtcBlock {
    pub signaling_url: String,
    pub ice_servers: Vec<Value>,
}

/// The `subscribe_receive_policy` the client v0.0.7 needs (WIRE.md §8.2).
pub const RECEIVE_VIDEO_TRACKS_MAX: usize = openchat_core::limits::SUBSCRIBE_VIDEO_TRACKS_MAX;
pub const RECEIVE_AUDIO_TRACKS_MAX: usize = openchat_core::limits::SUBSCRIBE_AUDIO_TRACKS_MAX;

pub fn document(config: &FrontConfig, instance: &InstanceRecord, rtc: Option<&RtcBlock>) -> Value {
    let primary = instance.primary_server.as_ref();
    let server_name = instance
        .name
        .clone()
        .or_else(|| primary.map(|server| server.display_name.clone()))
        .unwrap_or_else(|| FALLBACK_SERVER_NAME.to_owned());
    let uid_policy = primary.map_or(UidPolicy::ServerScoped, |server| server.uid_policy);
    let limits = &config.limits;
    let mut doc = json!({
        "server_name": server_name,
        "server_id": primary.map_or("", |server| server.id.as_str()),
        "api_version": API_VERSION,
        "build_version": config.build.version,
        "build_commit": config.build.commit,
        "build_time": config.build.time,
                // Headers mode trusts the identity headers (the client's `token_proof`); session
        // mode needs a signed challenge (E2EE.md §4).
        "identity_handshake_modes": [if config.session_auth { "challenge_signature" } else { "token_proof" }],
        "user_uid_policy": uid_policy.as_str(),
        "profile_data_policy": "uid_only",
        "transport": {"websocket": true, "sse": false, "polling": false},
        "features": {
            "messaging": true,
            "presence": true,
            "attachments": true,
            "notifications": true,
            "server_creation": true
        },
        "mentions": {
            "user": true,
            "channel": true,
            "resolve": true,
            "notifications": true,
            "supported_tokens": ["@here", "@channel"]
        },
        "read_acks": {"channel": true, "cursor_type": "message_index", "monotonic": true},
        // E2EE.md: channels with epochs, key relay and backups exist.
        "e2ee": {"channels": true, "epochs": true, "key_relay": true, "backups": true},
        "limits": {
            "max_message_bytes": limits.max_message_bytes,
            "max_upload_bytes": limits.max_upload_bytes,
            "rate_limit_per_minute": limits.rate_limit_per_minute,
            "max_call_participants": limits.max_call_participants,
            "max_attachment_width": ATTACHMENT_WIDTH_PX_MAX,
            "max_attachment_height": ATTACHMENT_HEIGHT_PX_MAX,
            "max_attachment_pixels": ATTACHMENT_PIXELS_MAX
        },
        "security": {
            "https_required": config.production,
            "certificate_pinning": "optional",
            "tls_fingerprint": null
        },
        "profile": {
            "enabled": true,
            "scope": "global",
            "fields": ["display_name", "avatar"],
            "avatar_modes": ["generated", "uploaded"],
            "display_name": {
                "min_length": DISPLAY_NAME_CHARS_MIN,
                "max_length": DISPLAY_NAME_CHARS_MAX,
                "pattern": "^[\\p{L}\\p{N} ._\\-]+$"
            },
            "avatar_upload": {
                "max_bytes": AVATAR_BYTES_MAX,
                "mime_types": ["image/png", "image/jpeg", "image/webp"],
                "max_width": AVATAR_SIDE_PX_MAX,
                "max_height": AVATAR_SIDE_PX_MAX
            },
            "realtime_event": "profile_updated",
            "message_author_profile_mode": "snapshot"
        }
    });
    if let Some(rtc) = rtc {
        // Voice, camera and screen share are proven with real browsers (tests/browser_sfu.rs);
        // simulcast: layer selection is shown by media/tests/sfu_sim.rs with a simulcast
        // publisher (two RIDs, a paused layer, switches on keyframes only).
        doc["rtc"] = json!({
            "protocol_version": "1.0",
            "signaling_url": rtc.signaling_url,
            "signaling_transport": "websocket",
            "topologies": ["sfu"],
            "features": {"voice": true, "video": true, "screenshare": true, "simulcast": true},
            "ice_servers": rtc.ice_servers,
            "connection_policy": {
                "join_timeout_ms": 12000,
                "answer_timeout_ms": 10000,
                "ice_restart_enabled": false,
                "reconnect_backoff_ms": [250, 500, 1000, 2000, 5000]
            },
            "subscribe_receive_policy": {
                "max_video_tracks": RECEIVE_VIDEO_TRACKS_MAX,
                "max_audio_tracks": RECEIVE_AUDIO_TRACKS_MAX
            }
        });
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{BuildInfo, Limits};

    fn config() -> FrontConfig {
        FrontConfig {
            public_base_url: "http://localhost:8080".into(),
            production: false,
            session_auth: false,
            limits: Limits {
                max_message_bytes: 1234,
                max_upload_bytes: 5678,
                rate_limit_per_minute: 9,
                max_call_participants: 10,
            },
            build: BuildInfo {
                version: "0.1.0".into(),
                commit: "abc".into(),
                time: "t".into(),
            },
            http: crate::guard::HttpBounds::default(),
            e2ee_self_join: false,
        }
    }

    #[test]
    fn empty_instance_still_has_every_required_object() {
        let doc = document(
            &config(),
            &InstanceRecord {
                name: None,
                primary_server: None,
            },
            None,
        );
        for key in ["transport", "features", "limits", "security"] {
            assert!(doc[key].is_object(), "{key}");
        }
        assert_eq!(doc["server_name"], FALLBACK_SERVER_NAME);
        assert_eq!(doc["server_id"], "");
        assert_eq!(doc["user_uid_policy"], "server_scoped");
        assert!(doc.get("rtc").is_none(), "rtc is advertised only once it works");
    }

    #[test]
    fn the_rtc_block_has_every_object_the_client_dereferences() {
        let rtc = RtcBlock {
            signaling_url: "ws://h/v1/rtc/signaling".into(),
            ice_servers: vec![],
        };
        let doc = document(
            &config(),
            &InstanceRecord {
                name: None,
                primary_server: None,
            },
            Some(&rtc),
        );
        for key in ["features", "connection_policy", "subscribe_receive_policy"] {
            assert!(doc["rtc"][key].is_object(), "rtc.{key}");
        }
        assert!(doc["rtc"]["ice_servers"].is_array());
        assert_eq!(doc["rtc"]["subscribe_receive_policy"]["max_audio_tracks"], 16);
        assert_eq!(doc["rtc"]["signaling_url"], "ws://h/v1/rtc/signaling");
    }

    #[test]
    fn limits_report_the_configured_values() {
        let doc = document(
            &config(),
            &InstanceRecord {
                name: Some("X".into()),
                primary_server: None,
            },
            None,
        );
        assert_eq!(doc["limits"]["max_message_bytes"], 1234);
        assert_eq!(doc["limits"]["max_upload_bytes"], 5678);
        assert_eq!(doc["limits"]["rate_limit_per_minute"], 9);
        assert_eq!(doc["limits"]["max_call_participants"], 10);
        assert_eq!(doc["server_name"], "X");
    }
}
