//! Guest application monitoring measured against a real `heartline
//! appserver` on loopback over TLS, printing its figures: the appserver's
//! resident memory with 0, 30 and 1,000 monitored processes (each with its
//! manager's connection open); the poll round trip (p50, p99) on one
//! connection with 30 processes; and, with 1,000 processes each polled
//! back to back by its own connection, status polls per second and the
//! round trip under that load.
//!
//! `cargo bench -p heartline --bench appmon` (PROCESSES=N instead of
//! 1,000; SECONDS=N for the load phase, default 5).

#![allow(clippy::unwrap_used)] // a benchmark that cannot set up should panic

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use heartline::appmon::proto::{
    ClientFrame, MAX_REPLY, ProcessId, Reply, Request, ServerFrame, StartSpec, VERSION, read_frame,
    write_frame,
};
use heartline::appmon::tls::{self, Role, TlsFiles};
use heartline::demo::local_guest::LocalGuest;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const BIN: &str = env!("CARGO_BIN_EXE_heartline");

/// One manager connection, speaking the protocol directly.
struct Client {
    stream: TlsStream<TcpStream>,
    next_id: u32,
}

impl Client {
    async fn connect(address: &str, tls: Arc<rustls::ClientConfig>) -> Client {
        let tcp = TcpStream::connect(address).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .unwrap();
        Client { stream, next_id: 1 }
    }

    async fn ask(&mut self, request: Request) -> Reply {
        let id = self.next_id;
        self.next_id += 1;
        let frame = ClientFrame {
            version: VERSION,
            id,
            request,
        };
        write_frame(&mut self.stream, &frame).await.unwrap();
        loop {
            match read_frame(&mut self.stream, MAX_REPLY)
                .await
                .unwrap()
                .unwrap()
            {
                ServerFrame::Reply { id: got, result } if got == id => return result.unwrap(),
                _ => {}
            }
        }
    }

    /// Starts a long sleep; its process id.
    async fn start(&mut self) -> ProcessId {
        let spec = StartSpec {
            argv: vec!["sleep".into(), "100000".into()],
            env: Vec::new(),
            cwd: None,
            orphan_timeout_ms: 60_000,
        };
        match self.ask(Request::Start(spec)).await {
            Reply::Started { process, .. } => process,
            other => panic!("{other:?}"),
        }
    }

    async fn poll(&mut self, process: ProcessId) -> Duration {
        let sent = Instant::now();
        let reply = self
            .ask(Request::Poll {
                process,
                output_from: 0,
            })
            .await;
        assert!(matches!(reply, Reply::Status(_)));
        sent.elapsed()
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn open_and_start(
    clients: &mut Vec<(Client, ProcessId)>,
    until: usize,
    address: &str,
    tls: &Arc<rustls::ClientConfig>,
) {
    while clients.len() < until {
        let mut client = Client::connect(address, tls.clone()).await;
        let process = client.start().await;
        clients.push((client, process));
    }
}

fn main() {
    let processes = env_or("PROCESSES", 1000);
    let seconds = env_or("SECONDS", 5) as u64;
    let max = (processes + 16).to_string();
    let guest = LocalGuest::start(Path::new(BIN), &["--max-processes", &max]).unwrap();
    let server = guest.pid().unwrap();
    let tls = tls::client_config(&TlsFiles::in_dir(guest.dir(), Role::Appmgr)).unwrap();
    let address = guest.address();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("appmon benchmark: a real appserver on loopback, TLS 1.3, mutual authentication");
    println!(
        "appserver RSS, no processes:      {:>7} KiB",
        rss_kib(server)
    );

    runtime.block_on(async {
        let mut clients = Vec::new();
        open_and_start(&mut clients, 30, &address, &tls).await;
        println!("appserver RSS, 30 processes:      {:>7} KiB", rss_kib(server));

        let (client, process) = &mut clients[0];
        for _ in 0..200 {
            client.poll(*process).await;
        }
        let mut rtts: Vec<Duration> = Vec::with_capacity(10_000);
        for _ in 0..10_000 {
            rtts.push(client.poll(*process).await);
        }
        rtts.sort();
        println!(
            "poll round trip, one connection:  p50 {:?}  p99 {:?}  ({} polls, 30 processes)",
            percentile(&rtts, 0.5),
            percentile(&rtts, 0.99),
            rtts.len()
        );

        let started = Instant::now();
        open_and_start(&mut clients, processes, &address, &tls).await;
        let took = started.elapsed();
        println!(
            "started {} more processes, one connection each, in {:.1?} ({:.0}/s)",
            processes - 30,
            took,
            (processes - 30) as f64 / took.as_secs_f64()
        );
        println!("appserver RSS, {processes} processes:    {:>7} KiB", rss_kib(server));

        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut load = tokio::task::JoinSet::new();
        for (mut client, process) in clients {
            load.spawn(async move {
                let mut rtts = Vec::new();
                while Instant::now() < deadline {
                    rtts.push(client.poll(process).await);
                }
                rtts
            });
        }
        let mut rtts: Vec<Duration> = Vec::new();
        while let Some(done) = load.join_next().await {
            rtts.extend(done.unwrap());
        }
        rtts.sort();
        println!(
            "status polls/s, {processes} processes, each polled back to back by its own connection: {:.0}  (round trip p50 {:?}  p99 {:?})",
            rtts.len() as f64 / seconds as f64,
            percentile(&rtts, 0.5),
            percentile(&rtts, 0.99)
        );
        println!("appserver RSS after the load:     {:>7} KiB", rss_kib(server));
    });
}
