#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/seeds/<target>/ (committed).

Seeds are small valid inputs that reach deep into each target: real Modbus answers to the
requests the modbus_response device makes, Sparkplug births and data as the simulator sends
them, the JSON of an IoT box, patterns and topics, the sample configs. Run from the repository
root: python3 fuzz/seeds/make.py
"""

import os
import struct
import glob

ROOT = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def crc16(frame):
    crc = 0xFFFF
    for b in frame:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return struct.pack("<H", crc)


# modbus_decode: type, order, flags, bit, [scale f64 le], [offset f64 le], registers.
put("modbus_decode", "u32_cdab", bytes([4, 3, 0, 0]) + bytes.fromhex("5678 1234"))
put("modbus_decode", "f32_scaled", bytes([7, 0, 2, 0]) + struct.pack("<d", 0.1) + bytes.fromhex("42c8 0000"))
put("modbus_decode", "bool_bit", bytes([0, 0, 1, 5]) + bytes.fromhex("0020"))
put("modbus_decode", "string", bytes([9, 2, 0x30, 0]) + b"ABCDEFG\x00")
put("modbus_decode", "u64_offset", bytes([6, 1, 4, 0]) + struct.pack("<d", -5.0) + bytes(8))
put("modbus_decode", "f64_nan", bytes([8, 0, 0x20, 0]) + bytes.fromhex("7ff8000000000000"))

# modbus_response: the device's four requests (coils 0..3, discrete 1, holding 0..16, input
# 0..8, unit 7) answered correctly, in one chunk each, a byte at a time, and with an exception.
pdus = [
    bytes([1, 1, 0b1001]),
    bytes([2, 1, 1]),
    bytes([3, 34]) + bytes(range(34)),
    bytes([4, 18]) + struct.pack(">d", 21.5) + bytes(10),
]


def tcp(tid, pdu, unit=7):
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def rtu(pdu, unit=7):
    frame = bytes([unit]) + pdu
    return frame + crc16(frame)


def chunks(frames):
    out = b""
    for f in frames:
        while f:
            out += bytes([min(len(f), 255)]) + f[:255]
            f = f[255:]
    return out


put("modbus_response", "tcp_all", b"\x00" + chunks([tcp(i, p) for i, p in enumerate(pdus)]))
put("modbus_response", "rtu_all", b"\x01" + chunks([rtu(p) for p in pdus]))
put("modbus_response", "tcp_bytewise",
    b"\x00" + b"".join(bytes([1, b]) for b in b"".join(tcp(i, p) for i, p in enumerate(pdus))))
put("modbus_response", "tcp_exception", b"\x00" + chunks([tcp(0, bytes([0x81, 2]))] + [tcp(i, p) for i, p in enumerate(pdus[1:], 1)]))
put("modbus_response", "tcp_wrong_tid", b"\x00" + chunks([tcp(9, pdus[0])]))
put("modbus_response", "tcp_big_length", b"\x00" + chunks([struct.pack(">HHHB", 0, 0, 65535, 7)]))

# mqtt_json: topic byte, path, NUL, payload.
box = (b'{"ts": 1800000000123, "state": {"run": 1, "power": true, "setup": 0, "mode": "AUTO"},'
       b' "spindle": {"rpm": 8000.5}, "alarm": {"code": 0}, "counters": {"parts": 1234}, "axes": [{"load": 3}]}')
put("mqtt_json", "box", b"\x00axes[0].load\x00" + box)
put("mqtt_json", "status", b"\x01\x00offline")
put("mqtt_json", "rfc3339", b"\x00ts\x00" + b'{"ts": "2027-01-01T08:00:00+08:00", "state": {"run": "1"}}')
put("mqtt_json", "nested", b"\x00a[0][1].b\x00" + b'{"a": [[0, {"b": 1e308}]]}')

# sparkplug: topic byte, length byte, payload. A birth with names and aliases, data by alias.


def varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(number, wire, value):
    key = varint(number << 3 | wire)
    if wire == 0:
        return key + varint(value)
    if wire == 2:
        return key + varint(len(value)) + value
    if wire == 1:
        return key + struct.pack("<d", value)
    return key + struct.pack("<f", value)


def metric(name, alias, datatype, value_field):
    m = b""
    if name is not None:
        m += field(1, 2, name.encode())
    m += field(2, 0, alias) + field(4, 0, datatype) + value_field
    return field(2, 2, m)


nbirth = field(1, 0, 1800000000000) + metric("bdSeq", 0, 8, field(11, 0, 0)) + field(3, 0, 0)
dbirth = (field(1, 0, 1800000000000)
          + metric("Running", 1, 3, field(10, 0, 1))
          + metric("Spindle/RPM", 2, 10, field(13, 1, 8000.0))
          + metric("Power", 3, 11, field(14, 0, 1))
          + metric("Alarm/Code", 4, 3, field(10, 0, 0))
          + field(3, 0, 1))
ddata = field(1, 0, 1800000001000) + metric(None, 2, 0, field(13, 1, 7500.0)) + field(3, 0, 2)
msgs = [(0, nbirth), (1, dbirth), (2, ddata)]
put("sparkplug", "birth_data", b"".join(bytes([t, len(p)]) + p for t, p in msgs))
put("sparkplug", "death", bytes([5, 0]) + bytes([6, len(nbirth)]) + nbirth)

# topic: pattern NUL topic NUL template.
put("topic", "captures", "plant/{line}/{machine}/status\0plant/l1/cnc03/status\0{line}-{machine}")
put("topic", "rest", "spBv1.0/{group}/#\0spBv1.0/g/DDATA/n/d\0{group}")
put("topic", "dollar", "+/x\0$SYS/x\0m")
put("topic", "empty_levels", "a/+/{c}\0a//\0x{c}")

# config: the sample configs and profiles.
repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
for path in sorted(glob.glob(os.path.join(repo, "config", "*.toml")) + glob.glob(os.path.join(repo, "config", "profiles", "*.toml"))):
    with open(path, "rb") as f:
        put("config", os.path.basename(path), f.read())

# encoder: measurement, precision, then steps (op, key, u64, [text]).
put("encoder", "tags_and_fields",
    b"\x06signal\x00"
    + b"\x00\x07machine" + bytes(8) + b"\x05cnc01"
    + b"\x01\x03rpm" + struct.pack(">q", -12)
    + b"\x03\x04load" + struct.pack(">d", 0.5)
    + b"\x05\x04mode" + bytes(8) + b"\x06AUTO \"\\"
    + struct.pack(">q", 1800000000123456789))
