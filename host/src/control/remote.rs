//! `heartline --on NODE`: control requests run on another node, through
//! this one. A request travels to that node's daemon on the admin mailbox
//! as [`AdminMessage::Forward`] (the control protocol's JSON, which the
//! brains never read), is answered there as if it came from its own CLI,
//! and the answer comes back as [`AdminMessage::ForwardReply`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use heartline_brain::message::{AdminMessage, encode};
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::warn;

use super::server::{self, Services};
use super::{Request, Response};
use crate::comm::{self, Command};

/// Calls to other nodes, matched with their answers.
#[derive(Debug, Clone)]
pub struct Remote {
    node: u16,
    /// The hosts' names, for messages.
    names: Arc<std::collections::BTreeMap<u16, String>>,
    comm: comm::Handle,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>>,
    next: Arc<AtomicU64>,
}

impl Remote {
    /// A caller on node `node`, naming nodes by `names`.
    #[must_use]
    pub fn new(
        node: u16,
        names: std::collections::BTreeMap<u16, String>,
        comm: &comm::Handle,
    ) -> Remote {
        Remote {
            node,
            names: Arc::new(names),
            comm: comm.clone(),
            pending: Arc::default(),
            next: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Serves what other nodes forward here, and hands their answers to
    /// the calls waiting for them.
    pub fn serve(services: Services, mut forwards: mpsc::UnboundedReceiver<(u16, AdminMessage)>) {
        tokio::spawn(async move {
            while let Some((from, message)) = forwards.recv().await {
                match message {
                    AdminMessage::Forward { id, request } => {
                        let services = services.clone();
                        tokio::spawn(async move {
                            let response = match serde_json::from_value::<Request>(request) {
                                Ok(Request::Remote { .. }) => error(
                                    "a request run with --on cannot itself name another node"
                                        .into(),
                                ),
                                Ok(Request::Watch) => {
                                    error("watch runs on the node it is asked of".into())
                                }
                                Ok(request) => server::answer_within(&services, request).await,
                                Err(e) => error(format!("malformed forwarded request: {e}")),
                            };
                            services.remote.reply(from, id, &response).await;
                        });
                    }
                    AdminMessage::ForwardReply { id, response } => {
                        let response =
                            serde_json::from_value::<Response>(response).unwrap_or_else(|e| {
                                error(format!("malformed answer from node {from}: {e}"))
                            });
                        if let Some(waiting) = services.remote.pending.lock().await.remove(&id) {
                            let _ = waiting.send(response);
                        }
                    }
                    AdminMessage::Brain { .. } => {}
                }
            }
        });
    }

    /// Runs `request` on `node`; its answer, or why there is none.
    pub async fn call(&self, node: u16, request: Request) -> Response {
        if node == self.node {
            return error(format!(
                "{} is this node: run the command without --on",
                self.who(node)
            ));
        }
        let (reply, reachable) = oneshot::channel();
        let _ = self
            .comm
            .commands
            .send(Command::CanTalk { node, reply })
            .await;
        if !reachable.await.unwrap_or(false) {
            return error(format!(
                "{} is not up; it cannot run the command",
                self.who(node)
            ));
        }
        let timeout = server::timeout_of(&request);
        let request = match serde_json::to_value(&request) {
            Ok(request) => request,
            Err(e) => return error(format!("cannot encode the request: {e}")),
        };
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        self.pending.lock().await.insert(id, reply);
        let bytes = encode(&AdminMessage::Forward { id, request });
        if self
            .comm
            .commands
            .send(Command::SendAdmin { to: node, bytes })
            .await
            .is_err()
        {
            self.pending.lock().await.remove(&id);
            return error("the daemon is shutting down".into());
        }
        // A little longer than the node itself waits, so its own timeout
        // is the one reported.
        let waited = tokio::time::timeout(timeout + timeout / 10, answer).await;
        self.pending.lock().await.remove(&id);
        match waited {
            Ok(Ok(response)) => response,
            Ok(Err(_)) | Err(_) => Response::Error {
                message: format!(
                    "{} did not answer within {} (it went down, or the action goes on there)",
                    self.who(node),
                    humantime::format_duration(timeout)
                ),
                timed_out: true,
            },
        }
    }

    /// `bravo (2)`, or `node 2` for a node whose name is not configured.
    fn who(&self, node: u16) -> String {
        heartline_brain::api::node_name(node, self.names.get(&node).map(String::as_str))
    }

    async fn reply(&self, to: u16, id: u64, response: &Response) {
        let response = match serde_json::to_value(response) {
            Ok(response) => response,
            Err(e) => {
                warn!("cannot encode an answer for node {to}: {e}");
                return;
            }
        };
        let bytes = encode(&AdminMessage::ForwardReply { id, response });
        let _ = self
            .comm
            .commands
            .send(Command::SendAdmin { to, bytes })
            .await;
    }
}

fn error(message: String) -> Response {
    Response::Error {
        message,
        timed_out: false,
    }
}
