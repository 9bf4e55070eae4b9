"""A DL/T 645-2007 meter served by the `dlt645` package (PyPI, 3.2.0), an implementation of
the standard that is not ours, over TCP as a serial server passes an RS-485 line on.

    python pydlt645_meter.py FRAME_LOG

The meter's address is 000012345678 and it holds the values below, set through the package's
own API (it encodes them to BCD itself). Every request frame it receives is written to
FRAME_LOG as `dlt645 <control> <address>`. Listens on a free port and prints `ready PORT`.
"""

import sys
import threading

from dlt645 import MeterServerService

ADDRESS = "000012345678"
VALUES_00 = {  # energy, kWh
    0x00000000: 2345.67,
    0x00010000: 1234.56,
    0x00020000: 12.34,
}
VALUES_02 = {  # variables
    0x02010100: 221.3,  # V
    0x02010200: 219.8,
    0x02020100: 12.345,  # A
    0x02030000: -3.2109,  # kW, exporting
    0x02060000: 0.912,
}


def main():
    log_path = sys.argv[1]
    open(log_path, "w").close()
    meter = MeterServerService.new_tcp_server("127.0.0.1", 0, timeout=1.0)
    # The package compares the frame's address bytes as they are on the wire, lowest byte
    # first; its set_address(str) packs the digits highest byte first, so give it the bytes.
    meter.set_address(bytes.fromhex(ADDRESS)[::-1])
    for di, value in VALUES_00.items():
        assert meter.set_00(di, value), hex(di)
    for di, value in VALUES_02.items():
        assert meter.set_02(di, value), hex(di)

    handle = meter.handle_request

    def logged(frame):
        with open(log_path, "a") as f:
            f.write(f"dlt645 {frame.ctrl_code:02x} {bytes(frame.addr)[::-1].hex()}\n")
        return handle(frame)

    meter.handle_request = logged
    if not meter.server.start():
        sys.exit("the dlt645 package's TCP server did not start")
    print(f"ready {meter.server.port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
