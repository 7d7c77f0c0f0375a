//! A TCP proxy between Keel and the test PostgreSQL that injects real connection faults: it
//! reads the frontend protocol well enough to know which statement a message runs (simple
//! `Query`, or the `Bind` of a statement it saw `Parse`d on that connection), and on a rule's
//! statement cuts the connection — before the message reaches the server, or after the server
//! has it but before its answer reaches Keel. It can also play a database that is down
//! (accepted connections are closed at once, open ones are cut), or one that answers late
//! (every round trip held back).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Where a rule cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The message never reaches the server: the statement does not run.
    Before,
    /// The server gets the message (and its `Sync`) and runs it; its answer never reaches Keel.
    After,
}

struct Rule {
    needle: String,
    cut: Cut,
    /// Also play a database that is down from the moment of the cut.
    then_down: bool,
}

#[derive(Default)]
struct Shared {
    rules: Mutex<Vec<Rule>>,
    down: AtomicBool,
    /// Wakes every connection task to cut itself (the database went down).
    cut_all: Notify,
    fired: AtomicUsize,
    /// Connections served so far (each gets the next number).
    connections: AtomicUsize,
    /// While `Some`, every statement run, with the number of the connection that ran it.
    recorded: Mutex<Option<Vec<(usize, String)>>>,
    /// How long each round trip is held back, in milliseconds (`slow`).
    delay_ms: AtomicU64,
    /// Round trips held back so far.
    delayed: AtomicUsize,
}

pub struct FaultProxy {
    pub port: u16,
    upstream: String,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// A proxy to `upstream` (`host:port`) on a free loopback port.
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let (s, up) = (shared.clone(), upstream.to_owned());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if s.down.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                tokio::spawn(serve(client, up.clone(), s.clone()));
            }
        });
        FaultProxy { port, upstream: upstream.to_owned(), shared }
    }

    /// `url` (a database URL on the upstream server) rewritten to go through this proxy.
    pub fn url(&self, url: &str) -> String {
        let through = url.replacen(&self.upstream, &format!("127.0.0.1:{}", self.port), 1);
        assert_ne!(through, url, "{url} does not name {}", self.upstream);
        let sep = if through.contains('?') { '&' } else { '?' };
        format!("{through}{sep}sslmode=disable")
    }

    /// Cuts the next connection that runs a statement containing `needle` (once).
    pub fn cut_on(&self, needle: &str, cut: Cut) {
        self.rules().push(Rule { needle: needle.to_owned(), cut, then_down: false });
    }

    /// As `cut_on`, and the database stays down from then on until `up`.
    pub fn cut_and_go_down_on(&self, needle: &str, cut: Cut) {
        self.rules().push(Rule { needle: needle.to_owned(), cut, then_down: true });
    }

    /// How many rules have fired.
    pub fn fired(&self) -> usize {
        self.shared.fired.load(Ordering::SeqCst)
    }

    /// The database "goes away": open connections are cut, new ones closed at once.
    pub fn down(&self) {
        self.shared.down.store(true, Ordering::SeqCst);
        self.shared.cut_all.notify_waiters();
    }

    pub fn up(&self) {
        self.shared.down.store(false, Ordering::SeqCst);
    }

    /// The database answers late: every message that asks the server for an answer (a simple
    /// `Query`, an extended-protocol `Sync`) reaches it `delay` later; zero ends it.
    pub fn slow(&self, delay: Duration) {
        self.shared.delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// How many round trips were held back.
    pub fn delayed(&self) -> usize {
        self.shared.delayed.load(Ordering::SeqCst)
    }

    /// Starts recording every statement run through the proxy (`recorded`).
    pub fn record(&self) {
        *self.shared.recorded.lock().unwrap() = Some(Vec::new());
    }

    /// The statements run since `record`, each with the number of the connection that ran it,
    /// in the order they reached the proxy; recording stops.
    pub fn recorded(&self) -> Vec<(usize, String)> {
        self.shared.recorded.lock().unwrap().take().unwrap_or_default()
    }

    fn rules(&self) -> std::sync::MutexGuard<'_, Vec<Rule>> {
        self.shared.rules.lock().unwrap()
    }
}

async fn serve(client: TcpStream, upstream: String, shared: Arc<Shared>) {
    let Ok(server) = TcpStream::connect(&upstream).await else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, client_write) = client.into_split();
    let (server_read, mut server_write) = server.into_split();
    // Server to client: a plain copy, stopped before a cut so no answer slips through.
    let mut back = tokio::spawn(async move {
        let (mut r, mut w) = (server_read, client_write);
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    });
    let mut statements: HashMap<Vec<u8>, String> = HashMap::new();
    let mut startup = true;
    let connection = shared.connections.fetch_add(1, Ordering::SeqCst);
    loop {
        let message = tokio::select! {
            m = read_message(&mut client_read, startup) => m,
            _ = shared.cut_all.notified() => None,
            _ = &mut back => None,
        };
        let Some((kind, bytes)) = message else { break };
        if shared.down.load(Ordering::SeqCst) {
            break;
        }
        if startup {
            // An SSLRequest (refused by the server with `N`) is followed by the real startup.
            startup = bytes.len() == 8 && bytes[4..8] == [0x04, 0xd2, 0x16, 0x2f];
        }
        let sql = match kind {
            Some(b'Q') => Some(cstr(&bytes[5..]).0),
            Some(b'P') => {
                let (name, rest) = cstr(&bytes[5..]);
                statements.insert(name.into_bytes(), cstr(rest).0);
                None
            }
            Some(b'B') => {
                let (_portal, rest) = cstr(&bytes[5..]);
                let (stmt, _) = cstr(rest);
                statements.get(stmt.as_bytes()).cloned()
            }
            _ => None,
        };
        if let (Some(sql), Some(log)) = (&sql, shared.recorded.lock().unwrap().as_mut()) {
            log.push((connection, sql.clone()));
        }
        let rule = sql.and_then(|sql| {
            let mut rules = shared.rules.lock().unwrap();
            let i = rules.iter().position(|r| sql.contains(&r.needle))?;
            Some(rules.remove(i))
        });
        let Some(rule) = rule else {
            let delay = shared.delay_ms.load(Ordering::SeqCst);
            if delay > 0 && matches!(kind, Some(b'Q' | b'S')) {
                shared.delayed.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if server_write.write_all(&bytes).await.is_err() {
                break;
            }
            continue;
        };
        shared.fired.fetch_add(1, Ordering::SeqCst);
        // No answer reaches Keel from here on.
        back.abort();
        let _ = (&mut back).await;
        if rule.then_down {
            shared.down.store(true, Ordering::SeqCst);
            shared.cut_all.notify_waiters();
        }
        if rule.cut == Cut::After {
            let _ = server_write.write_all(&bytes).await;
            // An extended-protocol statement runs at its `Sync`: send up to it.
            if kind != Some(b'Q') {
                while let Some((k, b)) = read_message(&mut client_read, false).await {
                    let _ = server_write.write_all(&b).await;
                    if k == Some(b'S') {
                        break;
                    }
                }
            }
            drop(client_read);
            // Keel has lost the connection; the server gets time to run the message before
            // its socket closes.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        return;
    }
    back.abort();
}

/// One frontend message: `(type, whole message bytes)`; startup messages have no type byte.
async fn read_message(r: &mut tokio::net::tcp::OwnedReadHalf, startup: bool) -> Option<(Option<u8>, Vec<u8>)> {
    let mut head = vec![0u8; if startup { 4 } else { 5 }];
    r.read_exact(&mut head).await.ok()?;
    let len_at = if startup { 0 } else { 1 };
    let len = u32::from_be_bytes(head[len_at..len_at + 4].try_into().unwrap()) as usize;
    let mut bytes = head;
    let body = len.checked_sub(4)?;
    let start = bytes.len();
    bytes.resize(start + body, 0);
    r.read_exact(&mut bytes[start..]).await.ok()?;
    Some((if startup { None } else { Some(bytes[0]) }, bytes))
}

/// A NUL-terminated string at the start of `b`, and the bytes after it.
fn cstr(b: &[u8]) -> (String, &[u8]) {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    (String::from_utf8_lossy(&b[..end]).into_owned(), b.get(end + 1..).unwrap_or(&[]))
}
