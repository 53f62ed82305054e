//! SIP signalling gateway: transports, transactions, registrar with digest auth, B2BUA legs, overload control.
