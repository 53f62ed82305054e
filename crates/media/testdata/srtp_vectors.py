"""Writes srtp_libsrtp_vectors.txt: packets protected by libsrtp (through the pylibsrtp package), which the
media crate's tests must unprotect to the same plain packets and reproduce byte for byte.

Run: pip install pylibsrtp==1.0.0 && python3 srtp_vectors.py > srtp_libsrtp_vectors.txt
"""

import struct

from pylibsrtp import Policy, Session

MASTER = bytes(range(1, 31))  # key || salt
SSRC = 0x11223344


def rtp(sequence: int, payload_byte: int, length: int) -> bytes:
    header = struct.pack("!BBHII", 0x80, 0, sequence, (sequence * 160) & 0xFFFFFFFF, SSRC)
    return header + bytes([payload_byte]) * length


def rtcp_receiver_report() -> bytes:
    # RR with one report block, then SDES CNAME "x" (a compound packet).
    rr = struct.pack("!BBHI", 0x81, 201, 7, SSRC) + struct.pack("!IIIIII", 0xCAFEBABE, 5, 1000, 3, 0, 0)
    sdes = struct.pack("!BBHI", 0x81, 202, 2, SSRC) + bytes([1, 1, ord("x"), 0])
    return rr + sdes


print("# kind suite master plain protected (hex)")
for suite_name, profile in [
    ("AES_CM_128_HMAC_SHA1_80", Policy.SRTP_PROFILE_AES128_CM_SHA1_80),
    ("AES_CM_128_HMAC_SHA1_32", Policy.SRTP_PROFILE_AES128_CM_SHA1_32),
]:
    policy = Policy(key=MASTER, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
    session = Session(policy=policy)
    # Across a sequence wrap (the rollover counter goes to 1), payloads of several lengths.
    for i, sequence in enumerate([65530, 65531, 65532, 65533, 65534, 65535, 0, 1, 2]):
        plain = rtp(sequence, i, [160, 1, 17, 160, 33, 160, 160, 80, 160][i])
        print("rtp", suite_name, MASTER.hex(), plain.hex(), session.protect(plain).hex())
    for _ in range(3):
        plain = rtcp_receiver_report()
        print("rtcp", suite_name, MASTER.hex(), plain.hex(), session.protect_rtcp(plain).hex())
