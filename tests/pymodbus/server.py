"""A third-party Modbus server for Shopfloor's integration tests (tests/pymodbus.rs).

pymodbus serves the same register maps twice: Modbus TCP on the first port given and RTU
frames over TCP on the second. Every value is written here as raw registers, worked out by
hand in the comments, so the test checks Shopfloor's decoding against bytes that did not come
from Shopfloor's own encoder. Undefined addresses answer "illegal data address".

Usage: server.py TCP_PORT RTU_PORT. Prints "ready" once both listen; stops on SIGTERM.
"""

import asyncio
import signal
import sys

from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice


def regs(address, values):
    return SimData(address, values=values, datatype=DataType.REGISTERS)


# Unit 1: one of every type.
UNIT1_HOLDING = [
    regs(0, [1234]),  # u16 1234
    regs(1, [0xFF38]),  # i16 -200
    regs(2, [0x4366, 0x8000]),  # f32 230.5 = 0x43668000, ABCD
    regs(4, [0x5678, 0x1234]),  # u32 0x12345678 = 305419896, CDAB (low word first)
    regs(6, [0x3FF0, 0, 0, 0]),  # f64 1.0 = 0x3FF0000000000000, ABCD
    regs(10, [0x504D, 0x2D31, 0x3030, 0x3000]),  # "PM-1000" + NUL: 50 4D 2D 31 30 30 30 00
    regs(14, [0x0021]),  # bits 0 and 5 set
    regs(15, [0xFFFF, 0xFFFE]),  # i32 -2 = 0xFFFFFFFE, ABCD
]
UNIT1_INPUT = [regs(0, [0x4247, 0xEB85])]  # f32 49.98 ≈ 0x4247EB85, ABCD
UNIT1_COILS = [SimData(0, values=[True, False, True], datatype=DataType.BITS)]
UNIT1_DISCRETE = [SimData(0, values=[False, True], datatype=DataType.BITS)]

# Unit 2: a Carlo Gavazzi EM340 (config/profiles/carlo-gavazzi-em340.toml), registers 0–0x4F,
# INT32 low word first. Zero except:
EM340 = [0] * 0x50
EM340[0x00:0x02] = [2301, 0]  # V L1-N 230.1 V = 2301 (×10)
EM340[0x31] = 0x0384  # PF sys 0.900 = 900 (×1000)
EM340[0x33] = 500  # Hz 50.0 = 500 (×10)
EM340[0x34:0x36] = [0xE240, 0x0001]  # kWh(+) TOT 12345.6 kWh = 123456 = 0x0001E240
# W sys: −12.5 kW = −12500 W = −125000 in W×10. As i32: 2³² − 125000 = 4294842296 =
# 0xFFFE17B8, low word first: 17B8 FFFE.
EM340[0x28:0x2A] = [0x17B8, 0xFFFE]

# Unit 3: an Eastron SDM630 (config/profiles/eastron-sdm630.toml), input registers 0–0x4B,
# f32 ABCD. Zero except:
SDM630 = [0] * 0x4C
SDM630[0x00:0x02] = [0x4366, 0x8000]  # L1 voltage 230.5 V
SDM630[0x34:0x36] = [0x45FA, 0x0000]  # total power 8000 W = 0x45FA0000 → 8 kW
SDM630[0x48:0x4A] = [0x449A, 0x5000]  # import 1234.5 kWh = 0x449A5000


def devices():
    # pymodbus wants every table to hold something; units 2 and 3 get one bit of each.
    bit = [SimData(0, values=[False], datatype=DataType.BITS)]
    return [
        SimDevice(
            1,
            simdata=(UNIT1_COILS, UNIT1_DISCRETE, UNIT1_HOLDING, UNIT1_INPUT),
        ),
        SimDevice(2, simdata=(bit, bit, [regs(0, EM340)], [regs(0, EM340)])),
        SimDevice(3, simdata=(bit, bit, [regs(0, 0)], [regs(0, SDM630)])),
    ]


async def main():
    tcp_port, rtu_port = int(sys.argv[1]), int(sys.argv[2])
    servers = [
        ModbusTcpServer(devices(), address=("127.0.0.1", tcp_port)),
        ModbusTcpServer(
            devices(), address=("127.0.0.1", rtu_port), framer=FramerType.RTU
        ),
    ]
    for server in servers:
        await server.listen()
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        await server.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
