"""A 4G DTU (USR-G780-style, transparent mode) for Shopfloor's dial-in tests (tests/dial_in.rs).

It does what a real DTU does: connects out to the agent, sends its registration packet,
sends heartbeats every so often, and relays the RTU frames it gets to the RS-485 line. The
line here is pymodbus, an independent Modbus implementation, serving RTU framing on a local
socket; its registers are written below by hand.

What a real DTU does to the stream, all of it on purpose:
- heartbeats on their own timer, so they land between frames and between a request and its
  answer;
- heartbeats glued to the front or the back of an answer in one TCP segment;
- with --every-packet, the registration before every packet it sends;
- with --tls-ca FILE, TLS towards the agent, trusting the CA in FILE (DTUs with SSL);
- with --tcp, Modbus TCP towards the agent (the DTU converts MBAP to RTU and back, as DTUs
  with "Modbus TCP to RTU" switched on do);
- with --reconnect-every S --away A, it drops its connection every S seconds and stays away A
  seconds (a 4G session dropping), printing `gone <unix time>` and `back <unix time>`;
- with --schedule UP:AWAY:HOW,..., it stays connected UP seconds, then goes for AWAY seconds,
  HOW being `close` (it closes its connection: FIN) or `silent` (it just stops: no heartbeat,
  no answer, the socket left open, as a 4G link that dies), then comes back on a new
  connection; after the last step it stays. `gone` is printed the moment it closes or falls
  silent, `back` once its new connection has sent its registration.

Every request the agent sends is appended to --log as `<function code> <hex> <unix time>`, so
the test can show what went out on the wire, and when. Prints `ready` once the line is up; stops on SIGTERM.

Usage: dtu.py --agent HOST:PORT --registration TEXT --heartbeat TEXT [--period S]
              [--every-packet] [--tcp] [--reconnect-every S --away A]
              [--schedule UP:AWAY:HOW,...] [--source IP] --log FILE
"""

import argparse
import asyncio
import signal
import socket
import ssl
import sys
import time

from pymodbus.framer.rtu import FramerRTU

from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

# Unit 1: holding 0–9 and input 0–1. Values worked out by hand:
HOLDING = [
    1,  # 0 run = 1
    1234,  # 1 u16 1234
    0xFF38,  # 2 i16 -200
    0x4366,  # 3-4 f32 230.5 = 0x43668000
    0x8000,
    0x0001,  # 5-6 u32 0x0001E240 = 123456
    0xE240,
    7,  # 7
    8,  # 8
    9,  # 9
]
INPUT = [500, 0x0021]  # 0: 500; 1: bits 0 and 5 set
COILS = [True, False, True]

# Unit 2: holding 0–49, value = 100 + address.
UNIT2 = [100 + a for a in range(50)]


def devices():
    bit = [SimData(0, values=[False], datatype=DataType.BITS)]
    return [
        SimDevice(
            1,
            simdata=(
                [SimData(0, values=COILS, datatype=DataType.BITS)],
                bit,
                [SimData(0, values=HOLDING, datatype=DataType.REGISTERS)],
                [SimData(0, values=INPUT, datatype=DataType.REGISTERS)],
            ),
        ),
        SimDevice(
            2,
            simdata=(
                bit,
                bit,
                [SimData(0, values=UNIT2, datatype=DataType.REGISTERS)],
                [SimData(0, values=[0], datatype=DataType.REGISTERS)],
            ),
        ),
    ]


def crc(data):
    """The RTU CRC, low byte first, as pymodbus computes it."""
    return FramerRTU.compute_CRC(data).to_bytes(2, "big")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def rtu_answer(reader):
    """One RTU answer from the line: unit, function, then a byte count or an exception code."""
    head = await reader.readexactly(2)
    if head[1] & 0x80:
        return head + await reader.readexactly(3)
    count = await reader.readexactly(1)
    return head + count + await reader.readexactly(count[0] + 2)


class Dtu:
    def __init__(self, args, line_port):
        self.args = args
        self.line_port = line_port
        self.registration = args.registration.encode()
        self.heartbeat = args.heartbeat.encode()
        self.log = open(args.log, "a", buffering=1)
        self.answers = 0
        self.sessions = 0
        # Connections left open when the DTU fell silent: a dead 4G link sends no FIN.
        self.abandoned = []

    def packet(self, data):
        """What the DTU sends for `data`: the registration first, when it prefixes every packet."""
        return (self.registration + data) if self.args.every_packet else data

    async def heartbeats(self, writer):
        while True:
            await asyncio.sleep(self.args.period)
            writer.write(self.packet(self.heartbeat))
            await writer.drain()

    async def session(self, until, how="close"):
        host, port = self.args.agent.rsplit(":", 1)
        local = (self.args.source, 0) if self.args.source else None
        tls = ssl.create_default_context(cafile=self.args.tls_ca) if self.args.tls_ca else None
        reader, writer = await asyncio.open_connection(
            host, int(port), local_addr=local, ssl=tls
        )
        line_reader, line_writer = await asyncio.open_connection("127.0.0.1", self.line_port)
        writer.write(self.registration)
        await writer.drain()
        if self.sessions > 0:
            print(f"back {time.time():.3f}", flush=True)
        self.sessions += 1
        beats = asyncio.create_task(self.heartbeats(writer))
        try:
            pending = b""
            while until is None or time.monotonic() < until:
                timeout = None if until is None else max(0.01, until - time.monotonic())
                try:
                    data = await asyncio.wait_for(reader.read(1024), timeout)
                except asyncio.TimeoutError:
                    break
                if not data:
                    break
                pending += data
                while True:
                    if self.args.tcp:
                        # MBAP: transaction, protocol, length, unit; then the PDU.
                        if len(pending) < 7:
                            break
                        size = 6 + int.from_bytes(pending[4:6], "big")
                        if len(pending) < size:
                            break
                        mbap, pending = pending[:size], pending[size:]
                        body = mbap[6:]
                        frame = body + crc(body)
                    else:
                        # RTU read requests: 8 bytes (unit, function, start, count, CRC).
                        if len(pending) < 8:
                            break
                        frame, pending = pending[:8], pending[8:]
                    self.log.write(f"{frame[1]} {frame.hex()} {time.time():.3f}\n")
                    line_writer.write(frame)
                    await line_writer.drain()
                    answer = await rtu_answer(line_reader)
                    if self.args.tcp:
                        body = answer[:-2]
                        answer = mbap[:4] + len(body).to_bytes(2, "big") + body
                    await self.relay(writer, answer)
        finally:
            beats.cancel()
            print(f"gone {time.time():.3f}", flush=True)
            if how == "silent":
                self.abandoned.append(writer)
            else:
                writer.close()
            line_writer.close()

    async def relay(self, writer, answer):
        """The answer to the agent, with a heartbeat around it one time in four each way."""
        style = self.answers % 4
        self.answers += 1
        hb = self.heartbeat
        if style == 0:
            writer.write(self.packet(answer))
        elif style == 1:
            writer.write(self.packet(hb + answer))
        elif style == 2:
            writer.write(self.packet(answer + hb))
        else:
            # A heartbeat on its own between the request and its answer.
            writer.write(self.packet(hb))
            await writer.drain()
            await asyncio.sleep(0.03)
            writer.write(self.packet(answer))
        await writer.drain()

    async def run(self):
        if self.args.schedule:
            for step in self.args.schedule.split(","):
                up, away, how = step.split(":")
                try:
                    await self.session(time.monotonic() + float(up), how)
                except (ConnectionError, OSError, asyncio.IncompleteReadError):
                    pass
                await asyncio.sleep(float(away))
        every, away = self.args.reconnect_every, self.args.away
        while True:
            until = None if every is None else time.monotonic() + every
            try:
                await self.session(until)
            except (ConnectionError, OSError, asyncio.IncompleteReadError):
                pass
            await asyncio.sleep(away if away else 0.5)


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--agent", required=True)
    p.add_argument("--registration", required=True)
    p.add_argument("--heartbeat", required=True)
    p.add_argument("--period", type=float, default=0.7)
    p.add_argument("--every-packet", action="store_true")
    p.add_argument("--tcp", action="store_true")
    p.add_argument("--reconnect-every", type=float)
    p.add_argument("--away", type=float)
    p.add_argument("--schedule")
    p.add_argument("--tls-ca")
    p.add_argument("--source")
    p.add_argument("--log", required=True)
    args = p.parse_args()
    line_port = free_port()
    server = ModbusTcpServer(devices(), address=("127.0.0.1", line_port), framer=FramerType.RTU)
    await server.listen()
    print("ready", flush=True)
    dtu = asyncio.create_task(Dtu(args, line_port).run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    dtu.cancel()
    await server.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
