//! IP access control: CIDR allow-lists for SIP signalling and RTP.
