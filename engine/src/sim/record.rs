//! Recording frames to a file and replaying them as a WebSocket source (being written).
