"""Emulated meter buses behind serial servers in transparent mode, written from the public
standards DL/T 645-2007 (and -1997) and CJ/T 188-2004, for tests/meters.rs.

    python bus.py FRAME_LOG [--one]

Each port is one RS-485 bus as a serial server passes it on: raw frames over TCP. Several
meters hang on each bus; each answers only frames to its own address, the way meters do.
Every request frame that arrives is written to FRAME_LOG as `<protocol> <control> <address>`,
so the test can prove that only read commands went to the wire. Listens on two free ports
and prints `ready DLT645_PORT CJT188_PORT` when both listen. With `--one`, each bus holds only its first meter, which then answers the
broadcast address read (DL/T 645 0x13, CJ/T 188 0x03), as a meter alone on a line does.

DL/T 645 bus (addresses as on the nameplate):
  000000000001  2007 meter: the common identifiers (values below); 00020000 in two frames
                (a follow-up); 00010000 forward active energy counts up 10.00 kWh per read
  000000000002  1997 meter: 9010 = 777.77 kWh (up 1.00 per read), B611 = 220 V
  000000000003  answers with a broken checksum
  000000000004  answers from address 000000000099
  000000000005  refuses every read: error answer, error byte 0x02 (no such data)
  000000000006  silent
CJ/T 188 bus:
  00000000000011 cold water, m3: 1234.56 counting up 1.50 m3 per read, valve open
  00000000000012 hot water, litres: 5000.00 L, valve closed, battery low
  00000000000013 silent
"""

import socketserver
import sys
import threading

LOG_LOCK = threading.Lock()


def log(path, line):
    with LOG_LOCK:
        with open(path, "a") as f:
            f.write(line + "\n")


def bcd(value, nbytes, decimals, signed=False):
    """Packed BCD, lowest byte first; the top bit of the top byte is the sign."""
    n = round(abs(value) * 10**decimals)
    out = []
    for _ in range(nbytes):
        pair = n % 100
        out.append((pair // 10) << 4 | pair % 10)
        n //= 100
    if signed and value < 0:
        out[-1] |= 0x80
    return bytes(out)


def addr(text, nbytes):
    """Nameplate digits (highest first) to wire order (lowest byte first)."""
    text = text.rjust(nbytes * 2, "0")
    return bytes(int(text[i : i + 2], 16) for i in range(0, len(text), 2))[::-1]


def checksum(body):
    return sum(body) & 0xFF


def read_frame(rfile, header):
    """One frame from the stream: preamble skipped, (body without checksum, ok)."""
    b = rfile.read(1)
    while b and b[0] != 0x68:
        b = rfile.read(1)
    if not b:
        return None
    head = b + rfile.read(header - 1)
    if len(head) < header:
        return None
    rest = rfile.read(head[-1] + 2)
    if len(rest) < head[-1] + 2:
        return None
    body = head + rest[:-2]
    return body, checksum(body) == rest[-2] and rest[-1] == 0x16


# ---------------------------------------------------------------- DL/T 645

def dlt_frame(address, control, data):
    body = bytes([0x68]) + address + bytes([0x68, control, len(data)])
    body += bytes((b + 0x33) & 0xFF for b in data)
    return b"\xfe\xfe\xfe\xfe" + body + bytes([checksum(body), 0x16])


class Dlt2007Meter:
    def __init__(self):
        self.import_kwh = 1000.00
        self.values = {
            0x00000000: bcd(12345.67, 4, 2, True),
            0x02010100: bcd(220.1, 2, 1),
            0x02020100: bcd(5.123, 3, 3, True),
            0x02030000: bcd(3.3456, 3, 4, True),
            0x02030200: bcd(-1.2345, 3, 4, True),
            0x02060000: bcd(0.95, 2, 3, True),
            0x02800002: bcd(50.00, 2, 2),
            0x02800008: bcd(3.65, 2, 2),
        }

    def answer(self, address, control, data):
        if control == 0x11:
            di = int.from_bytes(data[:4], "little")
            if di == 0x00010000:
                value = bcd(self.import_kwh, 4, 2)
                self.import_kwh += 10.0
                return dlt_frame(address, 0x91, data[:4] + value)
            if di == 0x00020000:
                # 4321.09 kWh = 09 21 43 00 on the wire, in two frames: 09 21, then 43 00.
                value = bcd(4321.09, 4, 2)
                return dlt_frame(address, 0xB1, data[:4] + value[:2])
            if di in self.values:
                return dlt_frame(address, 0x91, data[:4] + self.values[di])
            return dlt_frame(address, 0xD1, bytes([0x02]))
        if control == 0x12:
            di = int.from_bytes(data[:4], "little")
            seq = data[4]
            if di == 0x00020000 and seq == 1:
                value = bcd(4321.09, 4, 2)
                return dlt_frame(address, 0x92, data[:4] + value[2:] + bytes([seq]))
            return dlt_frame(address, 0xD2, bytes([0x02]))
        return None


class Dlt1997Meter:
    def __init__(self):
        self.import_kwh = 777.77

    def answer(self, address, control, data):
        if control == 0x01:
            di = int.from_bytes(data[:2], "little")
            if di == 0x9010:
                value = bcd(self.import_kwh, 4, 2)
                self.import_kwh += 1.0
                return dlt_frame(address, 0x81, data[:2] + value)
            if di == 0xB611:
                return dlt_frame(address, 0x81, data[:2] + bcd(220, 2, 0))
            return dlt_frame(address, 0xC1, bytes([0x02]))
        return None


class BrokenChecksum:
    def answer(self, address, control, data):
        good = bytearray(dlt_frame(address, control | 0x80, data[:4] + bcd(1.0, 4, 2)))
        good[-2] ^= 0x5A
        return bytes(good)


class WrongAddress:
    def answer(self, address, control, data):
        return dlt_frame(addr("000000000099", 6), control | 0x80, data[:4] + bcd(1.0, 4, 2))


class Refuses:
    def answer(self, address, control, data):
        return dlt_frame(address, control | 0xC0, bytes([0x02]))


class Silent:
    def answer(self, *args):
        return None


DLT_METERS = {
    addr("000000000001", 6): Dlt2007Meter(),
    addr("000000000002", 6): Dlt1997Meter(),
    addr("000000000003", 6): BrokenChecksum(),
    addr("000000000004", 6): WrongAddress(),
    addr("000000000005", 6): Refuses(),
    addr("000000000006", 6): Silent(),
}


def dlt_bus(log_path):
    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            while True:
                got = read_frame(self.rfile, 10)
                if got is None:
                    return
                body, ok = got
                address, control = body[1:7], body[8]
                data = bytes((b - 0x33) & 0xFF for b in body[10:])
                log(log_path, f"dlt645 {control:02x} {address[::-1].hex()}")
                if not ok:
                    continue
                if address == b"\xaa" * 6 and control == 0x13 and len(DLT_METERS) == 1:
                    only = next(iter(DLT_METERS))
                    self.wfile.write(dlt_frame(only, 0x93, only))
                    continue
                meter = DLT_METERS.get(address)
                if meter is None:
                    continue
                reply = meter.answer(address, control, data)
                if reply:
                    self.wfile.write(reply)

    return Handler


# ---------------------------------------------------------------- CJ/T 188

def cjt_frame(meter_type, address, control, data):
    body = bytes([0x68, meter_type]) + address + bytes([control, len(data)]) + data
    return b"\xfe\xfe" + body + bytes([checksum(body), 0x16])


class WaterMeter:
    def __init__(self, volume, unit, st1):
        self.volume, self.unit, self.st1 = volume, unit, st1

    def answer(self, meter_type, address, control, data):
        if control != 0x01 or data[:2] not in (b"\x90\x1f", b"\x1f\x90"):
            return None
        payload = data[:3]
        payload += bcd(self.volume, 4, 2) + bytes([self.unit])
        payload += bcd(1200.00, 4, 2) + bytes([self.unit])
        payload += bytes([0x05, 0x30, 0x19, 0x06, 0x12, 0x26, 0x20])  # 2026-12-06 19:30:05
        payload += bytes([self.st1, 0x00])
        if self.unit == 0x2C:
            self.volume += 1.5
        return cjt_frame(meter_type, address, 0x81, payload)


CJT_METERS = {
    (0x10, addr("00000000000011", 7)): WaterMeter(1234.56, 0x2C, 0x00),
    (0x11, addr("00000000000012", 7)): WaterMeter(5000.00, 0x29, 0x05),
    (0x10, addr("00000000000013", 7)): None,
}


def cjt_bus(log_path):
    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            while True:
                got = read_frame(self.rfile, 11)
                if got is None:
                    return
                body, ok = got
                meter_type, address, control = body[1], body[2:9], body[9]
                log(log_path, f"cjt188 {control:02x} {address[::-1].hex()}")
                if ok and control == 0x03 and address == b"\xaa" * 7 and len(CJT_METERS) == 1:
                    (only_type, only), _ = next(iter(CJT_METERS.items()))
                    reply = body[11:14] + only
                    self.wfile.write(cjt_frame(only_type, only, 0x83, reply))
                    continue
                meter = CJT_METERS.get((meter_type, address))
                if ok and meter is not None:
                    reply = meter.answer(meter_type, address, control, body[11:])
                    if reply:
                        self.wfile.write(reply)

    return Handler


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    log_path = sys.argv[1]
    open(log_path, "w").close()
    if "--one" in sys.argv[2:]:
        for meters in (DLT_METERS, CJT_METERS):
            for other in list(meters)[1:]:
                del meters[other]
    servers = [
        Server(("127.0.0.1", 0), dlt_bus(log_path)),
        Server(("127.0.0.1", 0), cjt_bus(log_path)),
    ]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    ports = " ".join(str(s.server_address[1]) for s in servers)
    print(f"ready {ports}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
