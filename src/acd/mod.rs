//! Automatic call distribution, pure: queues, their order (priority, then
//! original entry time — the place in line), and positions.
