//! JetStream production settings against a real nats-server: credentials, existing consumer
//! configurations brought up to date, and a deleted consumer opened again without losing work.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lifeboat_common::bus::{Bus, OutgoingMessage, Queue, QueueOptions};
use lifeboat_common::jetstream::{JetStreamBus, NatsSettings};
use lifeboat_common::subjects;
use lifeboat_tests::{free_port, server_binary, Servers};

/// A nats-server with JetStream that only lets in clients presenting `token`.
struct TokenServer {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl TokenServer {
    async fn start(token: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let child = Command::new(server_binary("nats-server", "LIFEBOAT_NATS_SERVER"))
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "--auth", token, "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, url: format!("nats://127.0.0.1:{port}"), _dir: dir }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_server_requiring_a_token_lets_in_only_the_configured_token() {
    let server = TokenServer::start("s3cret-token").await;
    let refused = JetStreamBus::connect_with(&server.url, &NatsSettings::default()).await;
    let error = refused.err().expect("a connection without the token is refused").to_string();
    assert!(error.contains(&server.url), "the error names the server: {error}");

    let settings = NatsSettings { token: Some("s3cret-token".into()), ..NatsSettings::default() };
    let bus = JetStreamBus::connect_with(&server.url, &settings).await.expect("connect with the token");
    let stream = bus.context().get_stream(subjects::WORK_STREAM).await.expect("the work stream was created");
    assert_eq!(stream.cached_info().config.num_replicas, 1, "one replica on a single server");
}

#[test]
fn settings_come_from_the_nats_cli_variables() {
    // One test touches the process environment, so no other test races it.
    for (name, value) in [("NATS_USER", "lifeboat"), ("NATS_PASSWORD", "pw"), ("LIFEBOAT_NATS_REPLICAS", "3")] {
        std::env::set_var(name, value);
    }
    let settings = NatsSettings::from_env().expect("valid settings");
    assert_eq!(settings.user_password, Some(("lifeboat".into(), "pw".into())));
    assert_eq!(settings.replicas, 3);
    std::env::set_var("LIFEBOAT_NATS_REPLICAS", "many");
    let error = NatsSettings::from_env().unwrap_err();
    assert!(error.contains("LIFEBOAT_NATS_REPLICAS"), "{error}");
    std::env::remove_var("NATS_PASSWORD");
    let error = NatsSettings::from_env().unwrap_err();
    assert!(error.contains("NATS_USER and NATS_PASSWORD"), "{error}");
    for name in ["NATS_USER", "LIFEBOAT_NATS_REPLICAS"] {
        std::env::remove_var(name);
    }
}

#[tokio::test]
async fn a_changed_ack_wait_updates_the_existing_consumer() {
    let servers = Servers::start().await;
    let bus = servers.bus().await;
    let queue = Queue::Work("ebs".into());
    let long = QueueOptions { ack_wait: Duration::from_secs(60), ..QueueOptions::default() };
    drop(bus.consume(&queue, &long).await.expect("consume"));
    let short = QueueOptions { ack_wait: Duration::from_secs(20), ..QueueOptions::default() };
    drop(bus.consume(&queue, &short).await.expect("consume again with another ack wait"));
    let stream = bus.context().get_stream(subjects::WORK_STREAM).await.expect("work stream");
    let info = stream.consumer_info(queue.consumer_name()).await.expect("consumer info");
    assert_eq!(info.config.ack_wait, Duration::from_secs(20), "the consumer took the new ack wait");
}

#[tokio::test]
async fn a_deleted_consumer_is_opened_again_and_its_work_still_arrives() {
    let servers = Servers::start().await;
    let bus = servers.bus().await;
    let queue = Queue::Work("ebs".into());
    let mut source = bus.consume(&queue, &QueueOptions::default()).await.expect("consume");
    let stream = bus.context().get_stream(subjects::WORK_STREAM).await.expect("work stream");
    stream.delete_consumer(&queue.consumer_name()).await.expect("an operator deletes the consumer");
    let work = OutgoingMessage::new(subjects::work_subject("ebs"), bytes::Bytes::from_static(b"task"));
    bus.publish(work).await.expect("publish work");

    let delivered = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match source.next().await {
                Some(Ok(delivery)) => return delivery,
                Some(Err(e)) => tracing::info!(error = %e, "pull error while the consumer is gone"),
                None => panic!("the source ended instead of opening the consumer again"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the work arrives within a minute of the consumer's deletion");
    assert_eq!(delivered.payload.as_ref(), b"task");
    drop(delivered);
}
