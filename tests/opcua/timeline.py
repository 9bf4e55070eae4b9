"""An OPC UA server (python asyncua, pinned in scripts/test) that plays one scripted machine,
the same timeline `shopfloor sim` plays over Modbus, for tests/plc_timeline.rs: an OPC UA
machine and a Modbus machine on the same script must come out the same.

    timeline.py PORT --steps running:4,alarm:2,... --cycle 2 --rpm 6000 --alarm 2041
                     --program "O1001 PART-01"

Serves, in namespace `urn:shopfloor:timeline`, the variables of the simulator's register map
(src/sim/workshop.rs) under their signal names: Run, Power, Mode (UInt16), SpindleRpm and
AlarmCode (UInt16), Parts (UInt32) and Program (String). Prints `ready` when it listens, then
reads the script's start (Unix seconds, one line on stdin) and from then on sets each variable
as the simulator's machine_registers does: run 1 while running, power 0 while stopped, the
spindle speed while running, the alarm code in alarm, mode 1 in setup, parts counting one a
cycle while running. A variable is written when its value changes, with the time of the
change as its source timestamp. When the script ends the server stops, as the simulator stops
answering.
"""

import argparse
import asyncio
import datetime
import logging
import sys

from asyncua import Server, ua

NAMESPACE = "urn:shopfloor:timeline"


def registers(steps, cycle, rpm, alarm, elapsed):
    """The machine's values `elapsed` seconds into the script, or None past its end."""
    parts = 0
    t = 0.0
    for state, length in steps:
        if elapsed < t + length:
            into = elapsed - t
            if state == "running":
                parts += int(into // cycle)
            return {
                "Run": int(state == "running"),
                "Power": int(state != "stopped"),
                "SpindleRpm": rpm if state == "running" else 0,
                "AlarmCode": alarm if state == "alarm" else 0,
                "Parts": parts,
                "Mode": int(state == "setup"),
            }
        if state == "running":
            parts += int(length // cycle)
        t += length
    return None


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--steps", required=True)
    parser.add_argument("--cycle", type=float, required=True)
    parser.add_argument("--rpm", type=int, required=True)
    parser.add_argument("--alarm", type=int, required=True)
    parser.add_argument("--program", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    steps = [(s.split(":")[0], float(s.split(":")[1])) for s in args.steps.split(",")]

    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{args.port}/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace(NAMESPACE)
    machine = await server.nodes.objects.add_object(ua.NodeId("Lathe", ns), "Lathe")
    kinds = {
        "Run": ua.VariantType.UInt16,
        "Power": ua.VariantType.UInt16,
        "SpindleRpm": ua.VariantType.UInt16,
        "AlarmCode": ua.VariantType.UInt16,
        "Parts": ua.VariantType.UInt32,
        "Mode": ua.VariantType.UInt16,
    }
    nodes = {}
    for name, vtype in kinds.items():
        nodes[name] = await machine.add_variable(ua.NodeId(name, ns), name, ua.Variant(0, vtype), vtype)
    program = await machine.add_variable(
        ua.NodeId("Program", ns), "Program", ua.Variant("", ua.VariantType.String), ua.VariantType.String
    )

    await server.start()
    print("ready", flush=True)
    start = float(await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline))
    now = datetime.datetime.now(datetime.timezone.utc)
    await program.write_value(
        ua.DataValue(ua.Variant(args.program, ua.VariantType.String), SourceTimestamp=now, ServerTimestamp=now)
    )
    last = {}
    while True:
        now = datetime.datetime.now(datetime.timezone.utc)
        values = registers(steps, args.cycle, args.rpm, args.alarm, max(0.0, now.timestamp() - start))
        if values is None:
            break
        for name, value in values.items():
            if last.get(name) != value:
                last[name] = value
                await nodes[name].write_value(
                    ua.DataValue(ua.Variant(value, kinds[name]), SourceTimestamp=now, ServerTimestamp=now)
                )
        await asyncio.sleep(0.02)
    await server.stop()
    await asyncio.sleep(3600)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
