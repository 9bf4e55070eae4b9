"""An S7 PLC for tests/s7.rs: python-snap7's pure-Python S7 server (an independent
implementation of ISO-on-TCP, COTP and S7comm), serving DB, M, I, Q, T and C areas filled with
known values.

Usage: server.py PORT. Prints "ready" once it listens; runs until killed.

Every value is written here as raw big-endian bytes, worked out by hand, so that the agent's
decoding is checked against bytes it did not produce.
"""

import logging
import struct
import sys
import time

from snap7.server import Server
from snap7.type import SrvArea


def db10():
    b = bytearray(80)
    b[0] = 0b0000_1001  # DBX0.0 and DBX0.3 true, DBX0.1 false
    b[1] = 0xAB  # DBB1 BYTE 171
    b[2:4] = struct.pack(">h", -1234)  # DBW2 INT
    b[4:6] = bytes([0xBE, 0xEF])  # DBW4 WORD 48879
    b[6:10] = struct.pack(">i", -123456)  # DBD6 DINT
    b[10:14] = bytes([0xDE, 0xAD, 0xBE, 0xEF])  # DBD10 DWORD 3735928559
    b[14:18] = bytes([0x42, 0xF6, 0xE9, 0x79])  # DBD14 REAL 123.456 (f32)
    b[18:26] = struct.pack(">d", -2.5)  # DBB18 LREAL
    # DBB26 STRING[10] = "PRESS-1": max 10, actual 7, then the characters.
    b[26:38] = bytes([10, 7]) + b"PRESS-1" + bytes(3)
    # DBB38 WSTRING[4] = "机床" (U+673A U+5E8A): max 4, actual 2, UTF-16BE.
    b[38:50] = bytes([0, 4, 0, 2, 0x67, 0x3A, 0x5E, 0x8A, 0, 0, 0, 0])
    b[50:52] = bytes([0x21, 0x23])  # DBW50 S5TIME: base 1 s, BCD 123 = 123000 ms
    b[52:56] = struct.pack(">i", 5000)  # DBD52 TIME 5000 ms
    b[56] = ord("K")  # DBB56 CHAR
    b[57] = 0xFB  # DBB57 SINT -5
    b[58:60] = struct.pack(">H", 65000)  # DBW58 UINT
    b[60:64] = struct.pack(">I", 4_000_000_000)  # DBD60 UDINT
    b[64:72] = struct.pack(">q", -7)  # DBB64 LINT
    b[72:80] = struct.pack(">Q", 1 << 40)  # DBB72 ULINT 1099511627776
    return b


def v_memory():
    # S7-200 SMART V memory is DB1.
    b = bytearray(256)
    b[10] = 0b0000_0100  # V10.2 true
    b[20:22] = struct.pack(">h", 321)  # VW20
    # The press-line profile's block (config/profiles/s7/press-line-s7-200-smart.toml):
    b[100] = 0b0000_0001  # V100.0 run true, V100.1 fault false
    b[102:106] = struct.pack(">i", 123_456)  # VD102 strokes
    b[106:108] = struct.pack(">h", 3)  # VW106 mode 3, continuous
    b[200:204] = struct.pack(">f", 50.5)  # VD200 REAL
    return b


def db20():
    # 250 DINTs, n × 7 at byte 4n: a block larger than any PDU.
    return bytearray(b"".join(struct.pack(">i", 7 * n) for n in range(250)))


def flags():
    b = bytearray(64)
    b[0] = 0b0000_0010  # M0.1
    b[20:22] = struct.pack(">h", 777)  # MW20
    b[24:28] = struct.pack(">i", 100_000)  # MD24
    return b


def inputs():
    b = bytearray(16)
    b[0] = 0b0000_0010  # I0.1
    b[2:4] = struct.pack(">H", 4242)  # IW2
    return b


def outputs():
    b = bytearray(16)
    b[1] = 0b0000_0001  # Q1.0
    b[4:6] = struct.pack(">h", -1)  # QW4
    return b


def timers():
    b = bytearray(32)  # two bytes an element
    b[10:12] = bytes([0x21, 0x23])  # T5: S5TIME 1 s × 123 = 123000 ms
    return b


def counters():
    b = bytearray(32)
    b[6:8] = bytes([0x00, 0x42])  # C3: BCD 042 = 42
    return b


def main():
    port = int(sys.argv[1])
    # The refused item of the tests (DB99) is logged as a warning on every poll.
    logging.getLogger("snap7").setLevel(logging.ERROR)
    server = Server(log=False)
    areas = [
        (SrvArea.DB, 10, db10()),
        (SrvArea.DB, 1, v_memory()),
        (SrvArea.DB, 20, db20()),
        (SrvArea.MK, 0, flags()),
        (SrvArea.PE, 0, inputs()),
        (SrvArea.PA, 0, outputs()),
        (SrvArea.TM, 0, timers()),
        (SrvArea.CT, 0, counters()),
    ]
    for area, index, data in areas:
        server.register_area(area, index, data)
    server.start(tcp_port=port)
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
