#![allow(clippy::unwrap_used, missing_docs)]
//! The storage thread on both backends: one message insert (a transaction on the storage
//! thread, fsync'd on SQLite) and one 50-message history page, through the same
//! `StorageHandle` the front-end uses. Postgres runs when `OPENCHAT_TEST_DATABASE_URL` names
//! a server (a throwaway database is created and dropped); under `CI=true` it must.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use openchat_core::{ChannelId, MessageId, UserUid, seed};
use openchat_storage::queries;
use openchat_storage::{NewMessage, PageRequest, StorageHandle, StoreConfig};

const NOW: i64 = 1_790_000_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn message(n: u64) -> NewMessage {
    NewMessage {
        id: MessageId::parse_owned(format!("msg_{n:08x}")).unwrap(),
        channel: ChannelId::parse("ch_general").unwrap(),
        author: UserUid::parse("uid_bench").unwrap(),
        body: "a message of a typical length, about as long as people write in chat".into(),
        reply_to: None,
        attachments: Vec::new(),
        envelope: None,
        now: NOW,
    }
}

fn bench_store(c: &mut Criterion, name: &str, handle: &StorageHandle, quick: bool) {
    let rt = runtime();
    assert!(
        rt.block_on(handle.run(queries::SeedFirstRun {
            seed: seed::default_community(),
            now: NOW
        }))
        .unwrap()
    );
    let mut group = c.benchmark_group(format!("storage/{name}"));
    if quick {
        group
            .sample_size(10)
            .measurement_time(Duration::from_millis(200))
            .warm_up_time(Duration::from_millis(50));
    }
    // The path itself: queue, job, one trivial statement, reply.
    group.bench_function("round_trip", |b| {
        b.iter(|| rt.block_on(handle.run(queries::Ping)).unwrap())
    });
    let mut n = 0u64;
    group.bench_function("insert_message", |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(handle.run(queries::CreateMessage { new: message(n) }))
                .unwrap()
        })
    });
    let page = PageRequest {
        limit: 50,
        before: None,
        after: None,
    };
    group.bench_function("history_page_50", |b| {
        b.iter(|| {
            rt.block_on(handle.run(queries::Messages {
                channel: ChannelId::parse("ch_general").unwrap(),
                page,
                viewer: None,
            }))
            .unwrap()
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let quick = std::env::var("OPENCHAT_BENCH_QUICK").is_ok();
    let dir = tempfile::tempdir().unwrap();
    let (handle, thread) = openchat_storage::start(StoreConfig::Sqlite {
        data_dir: dir.path().join("data"),
    })
    .unwrap();
    bench_store(c, "sqlite", &handle, quick);
    drop(handle);
    thread.shutdown(Duration::from_secs(10)).unwrap();

    let url = match std::env::var("OPENCHAT_TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true needs OPENCHAT_TEST_DATABASE_URL for the Postgres bench"
            );
            eprintln!("SKIP: OPENCHAT_TEST_DATABASE_URL is not set; Postgres storage bench not run");
            return;
        }
    };
    let base: tokio_postgres::Config = url.parse().unwrap();
    let name = format!("oc_bench_{}", std::process::id());
    let rt = runtime();
    let admin = |sql: String| {
        let base = base.clone();
        rt.block_on(async move {
            let (client, connection) = base.connect(tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            client.batch_execute(&sql).await.unwrap();
        })
    };
    admin(format!("CREATE DATABASE {name}"));
    let mut config = base.clone();
    config.dbname(&name);
    let (handle, thread) = openchat_storage::start(StoreConfig::Postgres {
        config: Box::new(config),
    })
    .unwrap();
    bench_store(c, "postgres", &handle, quick);
    drop(handle);
    thread.shutdown(Duration::from_secs(10)).unwrap();
    admin(format!("DROP DATABASE {name}"));
}

criterion_group!(storage, benches);
criterion_main!(storage);
