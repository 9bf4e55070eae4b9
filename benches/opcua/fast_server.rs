//! A small OPC UA server for the benchmark, fast enough to change 100,000 variables a second.
//!
//! The python asyncua server (`server.py`) writes a few thousand values a second at most on
//! this machine, far from the 100,000 changes a second of the workload. This one serves only
//! what the agent asks of a server with security policy None and an anonymous session:
//! GetEndpoints, OpenSecureChannel, CreateSession, ActivateSession, Read,
//! CreateSubscription, CreateMonitoredItems, Publish, DeleteSubscriptions, CloseSession and
//! CloseSecureChannel. Its address space is N Int32 variables `ns=2;s=I0` … `ns=2;s=I<N-1>`
//! (namespace 2 is `urn:shopfloor:bench`) that all take a new value every second (the
//! round's number, with the round's time as source and server timestamp). Every subscription
//! with items then has a data change for each of them, sent in answer to the next Publish
//! request the client has queued (one NotificationMessage per subscription and round). It
//! keeps no retransmission queue (no Republish) and sends no keep-alives: with every value
//! changing every second, every publishing interval of 1 s has data.
//!
//! The encoding, chunking and secure-channel framing are async-opcua's (`opcua::core`), the
//! same stack as the agent's client, so this server checks nothing the tests do not: the
//! tests' independent server is python asyncua. It is the benchmark's load generator.
//!
//! It runs as its own process (the benchmark executable started again with `--serve-opcua`)
//! on a current-thread runtime, so its CPU is measured apart from the agent's. It writes
//! `changes=<values changed so far>` to its stats file every second, like `server.py`.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use opcua::core::comms::buffer::SendBuffer;
use opcua::core::comms::chunker::Chunker;
use opcua::core::comms::message_chunk::{MessageChunk, MessageIsFinalType};
use opcua::core::comms::secure_channel::{Role, SecureChannel};
use opcua::core::comms::tcp_types::{AcknowledgeMessage, HelloMessage, MessageHeader, MessageType};
use opcua::core::{RequestMessage, ResponseMessage};
use opcua::crypto::CertificateStore;
use opcua::sync::RwLock;
use opcua::types::{
    ActivateSessionResponse, ApplicationDescription, ApplicationType, ByteString,
    ChannelSecurityToken, CloseSessionResponse, ContextOwned, CreateMonitoredItemsResponse,
    CreateSessionResponse, CreateSubscriptionResponse, DataChangeNotification, DataValue, DateTime,
    DecodingOptions, DeleteSubscriptionsResponse, EndpointDescription, ExtensionObject,
    GetEndpointsResponse, Identifier, MessageSecurityMode, MonitoredItemCreateResult,
    MonitoredItemNotification, NodeId, NotificationMessage, OpenSecureChannelResponse,
    PublishResponse, ReadResponse, ResponseHeader, ServiceFault, SignatureData,
    SimpleBinaryDecodable, SimpleBinaryEncodable, StatusCode, UAString, UserTokenPolicy,
    UserTokenType, Variant,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The benchmark's namespace, index 2 of the server's namespace table.
const NAMESPACE: &str = "urn:shopfloor:bench";
/// Largest message either side may send; the agent's subscriptions of 1000 items make
/// Publish responses of about 25 KB.
const MAX_MESSAGE: usize = 16 << 20;
const BUFFER: usize = 65_535;

/// One round of changes: its number and its time.
#[derive(Clone, Copy)]
struct Round {
    number: u64,
    at: DateTime,
}

/// `--serve-opcua PORT ITEMS STATS`: runs the server until killed.
pub fn serve(args: &[String]) {
    let port: u16 = args[0].parse().expect("port");
    let items: u64 = args[1].parse().expect("items");
    let stats = PathBuf::from(&args[2]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the benchmark server's port");
        let (rounds_tx, rounds) = watch::channel(Round {
            number: 0,
            at: DateTime::now(),
        });
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut number = 0u64;
            loop {
                tick.tick().await;
                number += 1;
                let _ = rounds_tx.send(Round {
                    number,
                    at: DateTime::now(),
                });
                let _ = std::fs::write(&stats, format!("changes={}\n", number * items));
            }
        });
        let pki = std::env::temp_dir().join(format!("shopfloor-bench-pki-{}", std::process::id()));
        let store = Arc::new(RwLock::new(CertificateStore::new(&pki)));
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let conn = Connection::new(stream, store.clone(), rounds.clone(), items);
            tokio::spawn(conn.run());
        }
    });
}

struct Subscription {
    id: u32,
    /// (client handle, variable index) of each monitored item.
    items: Vec<(u32, u64)>,
    next_sequence: u32,
    /// The newest round not yet sent.
    pending: Option<Round>,
}

struct Connection {
    stream: TcpStream,
    channel: SecureChannel,
    send: SendBuffer,
    items: u64,
    rounds: watch::Receiver<Round>,
    subscriptions: Vec<Subscription>,
    /// Queued Publish requests: (request id, request handle, acknowledgements).
    publish: std::collections::VecDeque<(u32, u32, usize)>,
    next_id: u32,
    endpoint_url: UAString,
    pending_chunks: Vec<MessageChunk>,
}

impl Connection {
    fn new(
        stream: TcpStream,
        store: Arc<RwLock<CertificateStore>>,
        rounds: watch::Receiver<Round>,
        items: u64,
    ) -> Connection {
        let context = Arc::new(RwLock::new(ContextOwned::default()));
        let channel = SecureChannel::new(store, Role::Server, context);
        Connection {
            stream,
            channel,
            send: SendBuffer::new(BUFFER, MAX_MESSAGE, 0, true),
            items,
            rounds,
            subscriptions: Vec::new(),
            publish: Default::default(),
            next_id: 1,
            endpoint_url: UAString::null(),
            pending_chunks: Vec::new(),
        }
    }

    async fn run(mut self) {
        let _ = self.serve().await;
    }

    async fn serve(&mut self) -> Result<(), String> {
        // `read_buf` is cancel-safe (a round may end the wait): what it read stays in `input`.
        let mut input = Vec::with_capacity(BUFFER);
        loop {
            tokio::select! {
                r = self.stream.read_buf(&mut input) => {
                    if r.map_err(|e| e.to_string())? == 0 {
                        return Ok(());
                    }
                    while input.len() >= 8 {
                        let size = u32::from_le_bytes(input[4..8].try_into().unwrap()) as usize;
                        if !(8..=MAX_MESSAGE).contains(&size) {
                            return Err(format!("message of {size} bytes"));
                        }
                        if input.len() < size {
                            break;
                        }
                        let rest = input.split_off(size);
                        let whole = std::mem::replace(&mut input, rest);
                        if !self.incoming(whole).await? {
                            return Ok(());
                        }
                    }
                    if input.capacity() < BUFFER {
                        input.reserve(BUFFER);
                    }
                }
                changed = self.rounds.changed() => {
                    changed.map_err(|e| e.to_string())?;
                    let round = *self.rounds.borrow_and_update();
                    for s in &mut self.subscriptions {
                        if !s.items.is_empty() {
                            s.pending = Some(round);
                        }
                    }
                    self.answer_publish()?;
                }
            }
            self.flush().await?;
        }
    }

    /// Handles one whole message from the client; false when the channel is closed.
    async fn incoming(&mut self, whole: Vec<u8>) -> Result<bool, String> {
        let options = DecodingOptions::default();
        let header = MessageHeader::decode(&mut Cursor::new(&whole[..8]), &options)
            .map_err(|e| e.to_string())?;
        match header.message_type {
            MessageType::Hello => {
                let hello = HelloMessage::decode(&mut Cursor::new(&whole[..]), &options)
                    .map_err(|e| e.to_string())?;
                self.endpoint_url = hello.endpoint_url.clone();
                let ack = AcknowledgeMessage::new(
                    0,
                    (BUFFER as u32).min(hello.send_buffer_size),
                    (BUFFER as u32).min(hello.receive_buffer_size),
                    match hello.max_message_size {
                        0 => MAX_MESSAGE as u32,
                        n => n.min(MAX_MESSAGE as u32),
                    },
                    0,
                );
                self.send.revise(
                    ack.send_buffer_size as usize,
                    ack.max_message_size as usize,
                    0,
                );
                let mut buf = Vec::new();
                ack.encode(&mut buf).map_err(|e| e.to_string())?;
                self.stream
                    .write_all(&buf)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(true)
            }
            MessageType::Chunk => {
                let chunk = MessageChunk::decode(&mut Cursor::new(&whole[..]), &options)
                    .map_err(|e| e.to_string())?;
                let head = chunk.message_header(&options).map_err(|e| e.to_string())?;
                if head.is_final == MessageIsFinalType::FinalError {
                    self.pending_chunks.clear();
                    return Ok(true);
                }
                let chunk = self
                    .channel
                    .verify_and_remove_security_server(chunk.data)
                    .map_err(|e| e.to_string())?;
                self.pending_chunks.push(chunk);
                if head.is_final == MessageIsFinalType::Intermediate {
                    return Ok(true);
                }
                let chunks = std::mem::take(&mut self.pending_chunks);
                let info = chunks[0]
                    .chunk_info(&self.channel)
                    .map_err(|e| e.to_string())?;
                let request: RequestMessage =
                    Chunker::decode(&chunks, &self.channel, None).map_err(|e| e.to_string())?;
                self.request(info.sequence_header.request_id, request)
            }
            other => Err(format!("unexpected message {other:?}")),
        }
    }

    fn reply(
        &mut self,
        request_id: u32,
        response: impl Into<ResponseMessage>,
    ) -> Result<(), String> {
        self.send
            .write(request_id, response.into(), &self.channel)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn endpoint(&self) -> EndpointDescription {
        EndpointDescription {
            endpoint_url: self.endpoint_url.clone(),
            server: ApplicationDescription {
                application_uri: "urn:shopfloor:bench-server".into(),
                product_uri: "urn:shopfloor:bench-server".into(),
                application_name: "Shopfloor benchmark server".into(),
                application_type: ApplicationType::Server,
                gateway_server_uri: UAString::null(),
                discovery_profile_uri: UAString::null(),
                discovery_urls: None,
            },
            server_certificate: ByteString::null(),
            security_mode: MessageSecurityMode::None,
            security_policy_uri: "http://opcfoundation.org/UA/SecurityPolicy#None".into(),
            user_identity_tokens: Some(vec![UserTokenPolicy {
                policy_id: "anonymous".into(),
                token_type: UserTokenType::Anonymous,
                issued_token_type: UAString::null(),
                issuer_endpoint_url: UAString::null(),
                security_policy_uri: UAString::null(),
            }]),
            transport_profile_uri:
                "http://opcfoundation.org/UA-Profile/Transport/uatcp-uasc-uabinary".into(),
            security_level: 0,
        }
    }

    /// Answers one request; false when the client closed the channel.
    fn request(&mut self, request_id: u32, request: RequestMessage) -> Result<bool, String> {
        let header = request.request_header().clone();
        let good = ResponseHeader::new_good(&header);
        match request {
            RequestMessage::OpenSecureChannel(r) => {
                self.channel.set_security_mode(r.security_mode);
                self.channel.set_secure_channel_id(1);
                self.channel.set_token_id(1);
                self.channel.set_token_lifetime(r.requested_lifetime);
                let response = OpenSecureChannelResponse {
                    response_header: good,
                    server_protocol_version: 0,
                    security_token: ChannelSecurityToken {
                        channel_id: 1,
                        token_id: 1,
                        created_at: DateTime::now(),
                        revised_lifetime: r.requested_lifetime,
                    },
                    server_nonce: ByteString::null(),
                };
                self.reply(request_id, response)?;
            }
            RequestMessage::CloseSecureChannel(_) => return Ok(false),
            RequestMessage::GetEndpoints(_) => {
                let response = GetEndpointsResponse {
                    response_header: good,
                    endpoints: Some(vec![self.endpoint()]),
                };
                self.reply(request_id, response)?;
            }
            RequestMessage::CreateSession(r) => {
                let response = CreateSessionResponse {
                    response_header: good,
                    session_id: NodeId::new(1, 1u32),
                    authentication_token: NodeId::new(1, 2u32),
                    revised_session_timeout: r.requested_session_timeout,
                    server_nonce: ByteString::from(vec![0u8; 32]),
                    server_certificate: ByteString::null(),
                    server_endpoints: Some(vec![self.endpoint()]),
                    server_software_certificates: None,
                    server_signature: SignatureData::default(),
                    max_request_message_size: 0,
                };
                self.reply(request_id, response)?;
            }
            RequestMessage::ActivateSession(_) => {
                let response = ActivateSessionResponse {
                    response_header: good,
                    server_nonce: ByteString::from(vec![0u8; 32]),
                    results: None,
                    diagnostic_infos: None,
                };
                self.reply(request_id, response)?;
            }
            RequestMessage::Read(r) => {
                let round = *self.rounds.borrow();
                let results = r
                    .nodes_to_read
                    .unwrap_or_default()
                    .iter()
                    .map(|n| self.read(&n.node_id, round))
                    .collect();
                let response = ReadResponse {
                    response_header: good,
                    results: Some(results),
                    diagnostic_infos: None,
                };
                self.reply(request_id, response)?;
            }
            RequestMessage::CreateSubscription(r) => {
                let id = self.next_id;
                self.next_id += 1;
                self.subscriptions.push(Subscription {
                    id,
                    items: Vec::new(),
                    next_sequence: 1,
                    pending: None,
                });
                let response = CreateSubscriptionResponse {
                    response_header: good,
                    subscription_id: id,
                    revised_publishing_interval: 1000.0,
                    revised_lifetime_count: r.requested_lifetime_count,
                    revised_max_keep_alive_count: r.requested_max_keep_alive_count,
                };
                self.reply(request_id, response)?;
            }
            RequestMessage::CreateMonitoredItems(r) => {
                let items = self.items;
                let mut results = Vec::new();
                let sub = self
                    .subscriptions
                    .iter_mut()
                    .find(|s| s.id == r.subscription_id);
                match sub {
                    None => {
                        let fault =
                            ServiceFault::new(&header, StatusCode::BadSubscriptionIdInvalid);
                        self.reply(request_id, fault)?;
                        return Ok(true);
                    }
                    Some(sub) => {
                        for item in r.items_to_create.unwrap_or_default() {
                            let index =
                                variable(&item.item_to_monitor.node_id).filter(|&i| i < items);
                            let status = match index {
                                Some(i) => {
                                    sub.items.push((item.requested_parameters.client_handle, i));
                                    StatusCode::Good
                                }
                                None => StatusCode::BadNodeIdUnknown,
                            };
                            results.push(MonitoredItemCreateResult {
                                status_code: status,
                                monitored_item_id: sub.items.len() as u32,
                                revised_sampling_interval: 1000.0,
                                revised_queue_size: 1,
                                filter_result: ExtensionObject::null(),
                            });
                        }
                        // The current values first, as a real server does.
                        sub.pending = Some(*self.rounds.borrow());
                    }
                }
                let response = CreateMonitoredItemsResponse {
                    response_header: good,
                    results: Some(results),
                    diagnostic_infos: None,
                };
                self.reply(request_id, response)?;
                self.answer_publish()?;
            }
            RequestMessage::Publish(r) => {
                let acks = r.subscription_acknowledgements.map_or(0, |a| a.len());
                self.publish
                    .push_back((request_id, header.request_handle, acks));
                self.answer_publish()?;
            }
            RequestMessage::DeleteSubscriptions(r) => {
                let ids = r.subscription_ids.unwrap_or_default();
                self.subscriptions.retain(|s| !ids.contains(&s.id));
                let response = DeleteSubscriptionsResponse {
                    response_header: good,
                    results: Some(vec![StatusCode::Good; ids.len()]),
                    diagnostic_infos: None,
                };
                self.reply(request_id, response)?;
            }
            RequestMessage::CloseSession(_) => {
                self.subscriptions.clear();
                self.reply(
                    request_id,
                    CloseSessionResponse {
                        response_header: good,
                    },
                )?;
            }
            _ => {
                let fault = ServiceFault::new(&header, StatusCode::BadServiceUnsupported);
                self.reply(request_id, fault)?;
            }
        }
        Ok(true)
    }

    /// The value of one node for a Read.
    fn read(&self, node: &NodeId, round: Round) -> DataValue {
        let value = match (node.namespace, &node.identifier) {
            // NamespaceArray
            (0, Identifier::Numeric(2255)) => Variant::from(vec![
                UAString::from("http://opcfoundation.org/UA/"),
                UAString::from("urn:shopfloor:bench-server"),
                UAString::from(NAMESPACE),
            ]),
            // ServerStatus.State: Running
            (0, Identifier::Numeric(2259)) => Variant::Int32(0),
            // MaxNodesPerRead: no limit
            (0, Identifier::Numeric(11705)) => Variant::UInt32(0),
            _ => match variable(node).filter(|&i| i < self.items) {
                Some(_) => Variant::Int32(round.number as i32),
                None => {
                    return DataValue {
                        status: Some(StatusCode::BadNodeIdUnknown),
                        ..Default::default()
                    };
                }
            },
        };
        DataValue {
            value: Some(value),
            status: Some(StatusCode::Good),
            source_timestamp: Some(round.at),
            server_timestamp: Some(round.at),
            ..Default::default()
        }
    }

    /// Sends each subscription's pending round in answer to a queued Publish request.
    fn answer_publish(&mut self) -> Result<(), String> {
        while !self.publish.is_empty() {
            let Some(s) = self.subscriptions.iter_mut().find(|s| s.pending.is_some()) else {
                return Ok(());
            };
            let round = s.pending.take().expect("pending");
            let (request_id, handle, acks) = self.publish.pop_front().expect("queued");
            let value = Variant::Int32(round.number as i32);
            let notifications = s
                .items
                .iter()
                .map(|&(client_handle, _)| MonitoredItemNotification {
                    client_handle,
                    value: DataValue {
                        value: Some(value.clone()),
                        status: Some(StatusCode::Good),
                        source_timestamp: Some(round.at),
                        server_timestamp: Some(round.at),
                        ..Default::default()
                    },
                })
                .collect();
            let data = DataChangeNotification {
                monitored_items: Some(notifications),
                diagnostic_infos: None,
            };
            let sequence_number = s.next_sequence;
            s.next_sequence += 1;
            let mut response_header = ResponseHeader::new_timestamped_service_result(
                DateTime::now(),
                handle,
                StatusCode::Good,
            );
            response_header.request_handle = handle;
            let response = PublishResponse {
                response_header,
                subscription_id: s.id,
                available_sequence_numbers: None,
                more_notifications: false,
                notification_message: NotificationMessage {
                    sequence_number,
                    publish_time: DateTime::now(),
                    notification_data: Some(vec![ExtensionObject::from_message(data)]),
                },
                results: Some(vec![StatusCode::Good; acks]),
                diagnostic_infos: None,
            };
            self.reply(request_id, response)?;
        }
        Ok(())
    }

    /// Writes everything encoded so far.
    async fn flush(&mut self) -> Result<(), String> {
        loop {
            if self.send.should_encode_chunks() {
                self.send
                    .encode_next_chunk(&self.channel)
                    .map_err(|e| e.to_string())?;
            }
            if !self.send.can_read() {
                return Ok(());
            }
            self.send
                .read_into_async(&mut self.stream)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
}

/// The index of `ns=2;s=I<index>`.
fn variable(node: &NodeId) -> Option<u64> {
    match (node.namespace, &node.identifier) {
        (2, Identifier::String(s)) => s.as_ref().strip_prefix('I')?.parse().ok(),
        _ => None,
    }
}
