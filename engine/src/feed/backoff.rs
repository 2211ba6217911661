//! Reconnect delays with exponential backoff and full jitter, and the budget of connection attempts (being written).
