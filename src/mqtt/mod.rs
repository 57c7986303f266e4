//! The versioned MQTT contract (topics, payloads), the embedded broker, the client with its
//! durable outbox, and fleet sync (availability, birth, stats, commands).
