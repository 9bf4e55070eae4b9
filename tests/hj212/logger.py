"""A test data logger (数采仪) written from HJ 212-2017, independent of the agent's code.

Sends one day of minute (2051) and hourly (2061) data and the daily total (2031) of a
wastewater outlet to a platform, fast, with what a field logger gets wrong or does on
purpose: one hourly packet split in two parts (PNUM/PNO), a packet with a bad CRC, one with a
wrong password, one of an unknown MN, a maintenance period (flag M) and an hour over the COD
limit. Waits for the 9014 answer of every packet whose Flag asks for one (bit A), checks its
CRC and QN, and prints a JSON summary on stdout.

HJ 212-2017 references: 6.3 (packet: ## + 4-digit length + data segment + CRC + CR LF),
6.3.2 (data segment QN;ST;CN;PW;MN;Flag;[PNUM;PNO;]CP=&&...&&), Appendix A (CRC16: register
0xFFFF, each byte XORed into the register shifted right by 8, polynomial 0xA001), Table 5
(Flag: version in bits 7..2, D bit 1 = split, A bit 0 = answer wanted), 6.6.4 (data flags).
"""

import argparse
import json
import socket
import ssl
import sys
import time


def crc16(data: bytes) -> int:
    reg = 0xFFFF
    for b in data:
        reg = (reg >> 8) ^ b
        for _ in range(8):
            lsb = reg & 1
            reg >>= 1
            if lsb:
                reg ^= 0xA001
    return reg


def frame(segment: str, bad_crc: bool = False) -> bytes:
    data = segment.encode("ascii")
    crc = crc16(data)
    if bad_crc:
        crc ^= 0x0101
    return b"##" + ("%04d" % len(data)).encode() + data + ("%04X" % crc).encode() + b"\r\n"


class Logger:
    def __init__(self, host, port, mn, pw, tls_ca=None):
        self.sock = socket.create_connection((host, port), timeout=10)
        if tls_ca:
            # Python's own TLS (OpenSSL), checking the platform's certificate and its address.
            context = ssl.create_default_context(cafile=tls_ca)
            self.sock = context.wrap_socket(self.sock, server_hostname=host)
        self.mn = mn
        self.pw = pw
        self.buf = b""
        self.acks = 0
        self.sent = 0
        self.seq = 0

    def qn(self, day, hh, mm):
        self.seq += 1
        return "%s%02d%02d00%03d" % (day, hh, mm, self.seq % 1000)

    def read_packet(self, timeout):
        self.sock.settimeout(timeout)
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RuntimeError("platform closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        if not line.startswith(b"##"):
            raise RuntimeError("answer without ##: %r" % line)
        length = int(line[2:6])
        data = line[6 : 6 + length]
        crc = int(line[6 + length : 6 + length + 4], 16)
        if crc16(data) != crc:
            raise RuntimeError("answer with a bad CRC: %r" % line)
        return data.decode()

    def send(self, segment, want_ack, bad_crc=False):
        self.sock.sendall(frame(segment, bad_crc))
        self.sent += 1
        if not want_ack:
            return None
        qn = segment.split(";", 1)[0]
        answer = self.read_packet(5)
        fields = dict(kv.split("=", 1) for kv in answer.split(";") if "=" in kv and not kv.startswith("CP"))
        if fields.get("CN") != "9014" or ("QN=" + fields.get("QN", "")) != qn:
            raise RuntimeError("not the answer to %s: %s" % (qn, answer))
        self.acks += 1
        return answer

    def expect_silence(self, seconds):
        """True when the platform sends nothing for `seconds`."""
        try:
            self.read_packet(seconds)
            return False
        except socket.timeout:
            return True


def data_segment(qn, cn, pw, mn, flag, data_time, groups, split=None):
    head = "QN=%s;ST=32;CN=%d;PW=%s;MN=%s;Flag=%d;" % (qn, cn, pw, mn, flag)
    if split:
        head += "PNUM=%d;PNO=%d;" % split
    cp = ";".join(["DataTime=" + data_time] + groups)
    return head + "CP=&&" + cp + "&&"


def cod_at(hour):
    """COD concentration (mg/L) of the hour: over the 100 mg/L limit at 14:00, high during the
    maintenance hours (flagged M, so no alert), else 60 + hour."""
    if hour == 14:
        return 130.0
    if hour in (3, 4):
        return 150.0
    return 60.0 + hour


def cod_flag(hour):
    return "M" if hour in (3, 4) else "N"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mn", required=True)
    ap.add_argument("--pw", required=True)
    ap.add_argument("--day", required=True, help="YYYYMMDD, the logger's local day")
    ap.add_argument("--hours", type=int, default=24, help="send the first N hours of the day only")
    ap.add_argument("--tls-ca", help="speak TLS, trusting the platform's certificate of this CA file")
    args = ap.parse_args()
    day = args.day
    log = Logger("127.0.0.1", args.port, args.mn, args.pw, args.tls_ca)
    # Flag: version 1 (HJ 212-2017) in bits 7..2 = 4, + A (answer wanted) = 5, + D (split) = 7.
    ack, split_ack = 5, 7
    silent = {}

    for hour in range(args.hours):
        for minute in range(60):
            t = "%s%02d%02d00" % (day, hour, minute)
            groups = [
                # Flow 2.5 L/s: 150 L = 0.15 m³ per minute.
                "w00000-Avg=2.5,w00000-Cou=0.15,w00000-Flag=N",
                "w01018-Avg=%.1f,w01018-Flag=%s" % (cod_at(hour), cod_flag(hour)),
                "w21003-Avg=3.2,w21003-Flag=N",
                "w01001-Avg=7.1,w01001-Flag=N",
            ]
            log.send(data_segment(log.qn(day, hour, minute), 2051, args.pw, args.mn, ack, t, groups), True)
        t = "%s%02d0000" % (day, hour)
        cod = cod_at(hour)
        hourly = [
            # 2.5 L/s for an hour: 9 m³.
            "w00000-Avg=2.5,w00000-Min=2.4,w00000-Max=2.6,w00000-Cou=9.0,w00000-Flag=N",
            "w01018-Avg=%.1f,w01018-Min=%.1f,w01018-Max=%.1f,w01018-Cou=%.3f,w01018-Flag=%s"
            % (cod, cod - 5, cod + 5, cod * 9.0 / 1000, cod_flag(hour)),
            "w21003-Avg=3.2,w21003-Min=3.0,w21003-Max=3.4,w21003-Cou=0.029,w21003-Flag=N",
            "w01001-Avg=7.1,w01001-Min=7.0,w01001-Max=7.2,w01001-Flag=N",
        ]
        qn = log.qn(day, hour, 59)
        if hour == 8:
            # The 08:00 hour in two parts, each answered.
            log.send(data_segment(qn, 2061, args.pw, args.mn, split_ack, t, hourly[:2], (2, 1)), True)
            log.send(data_segment(qn, 2061, args.pw, args.mn, split_ack, t, hourly[2:], (2, 2)), True)
        else:
            log.send(data_segment(qn, 2061, args.pw, args.mn, ack, t, hourly), True)
        if hour == 10:
            # Damaged on the way: not answered, not stored.
            bad = data_segment(log.qn(day, 10, 30), 2051, args.pw, args.mn, ack, "%s103000" % day,
                               ["w01018-Avg=777.7,w01018-Flag=N"])
            log.send(bad, False, bad_crc=True)
            silent["bad_crc"] = log.expect_silence(0.5)
            # A wrong password: not answered, not stored.
            wrong = data_segment(log.qn(day, 10, 31), 2051, "000000", args.mn, ack, "%s103100" % day,
                                 ["w01018-Avg=888.8,w01018-Flag=N"])
            log.send(wrong, False)
            silent["wrong_pw"] = log.expect_silence(0.5)
            # Another logger's MN, unknown to the platform.
            other = data_segment(log.qn(day, 10, 32), 2051, args.pw, "99999990000009", ack, "%s103200" % day,
                                 ["w01018-Avg=999.9,w01018-Flag=N"])
            log.send(other, False)
            silent["unknown_mn"] = log.expect_silence(0.5)

    # The day's total: 24 h × 9 m³ = 216 m³.
    t = "%s000000" % day
    daily = [
        "w00000-Avg=2.5,w00000-Min=2.4,w00000-Max=2.6,w00000-Cou=216.0,w00000-Flag=N",
        "w01018-Avg=70.2,w01018-Cou=15.163,w01018-Flag=N",
    ]
    log.send(data_segment(log.qn(day, 23, 59), 2031, args.pw, args.mn, ack, t, daily), True)
    log.sock.close()
    print(json.dumps({"sent": log.sent, "acks": log.acks, "silent": silent}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
