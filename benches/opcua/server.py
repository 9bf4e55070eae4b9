"""The OPC UA server of `cargo bench --bench opcua` (benches/opcua.rs), built on python asyncua
(the version pinned in scripts/test): N Int32 variables that all change once a second.

    server.py PORT --items N --stats FILE

Namespace `urn:shopfloor:bench`; the variables are `ns=2;s=I{i}` for i in 0..N, in folders of
100 (`F{i // 100}` under Objects: asyncua checks a new node against every sibling, so 100,000
siblings would take hours to build). Prints `ready` on stdout when it listens.

Every second (on the second) the server starts a round: it writes one new value, the round's
number with the round's time as source and server timestamp, into every variable, through the
address space's own write path (the stored value, then the data-change callbacks that feed
the monitored items of every subscription: what `Server.write_attribute_value` does, less its
per-call type check). It yields to the event loop every 500 writes so that it keeps answering
Publish requests. A round that takes longer than a second is followed at once by the next:
then the server changes fewer than N values a second, and the benchmark reports how many it
did change.

After every round it rewrites FILE with one line `changes=C rounds=R late=L`: the values
written since start, the rounds, and how many rounds ran past their second.
"""

import argparse
import asyncio
import datetime
import logging
import os
import sys
import time

from asyncua import Server, ua

NAMESPACE = "urn:shopfloor:bench"
PER_FOLDER = 100


def variable_item(i, ns, parent):
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = ua.NodeId(f"I{i}", ns)
    item.BrowseName = ua.QualifiedName(f"I{i}", ns)
    item.NodeClass = ua.NodeClass.Variable
    item.ParentNodeId = parent
    item.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HasComponent)
    item.TypeDefinition = ua.NodeId(ua.ObjectIds.BaseDataVariableType)
    attrs = ua.VariableAttributes()
    attrs.DisplayName = ua.LocalizedText(f"I{i}")
    attrs.Value = ua.Variant(0, ua.VariantType.Int32)
    attrs.DataType = ua.NodeId(ua.ObjectIds.Int32)
    attrs.ValueRank = -1
    attrs.AccessLevel = ua.AccessLevel.CurrentRead.mask
    attrs.UserAccessLevel = attrs.AccessLevel
    item.NodeAttributes = attrs
    return item


def write_stats(path, changes, rounds, late):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(f"changes={changes} rounds={rounds} late={late}\n")
    os.replace(tmp, path)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--stats", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{args.port}/")
    server.set_server_name("shopfloor bench server")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace(NAMESPACE)

    folders = []
    for f in range((args.items + PER_FOLDER - 1) // PER_FOLDER):
        folder = await server.nodes.objects.add_folder(ua.NodeId(f"F{f}", ns), f"F{f}")
        folders.append(folder.nodeid)
    items = [variable_item(i, ns, folders[i // PER_FOLDER]) for i in range(args.items)]
    for result in await server.iserver.isession.add_nodes(items):
        if not result.StatusCode.is_good():
            sys.exit(f"adding a variable failed: {result.StatusCode}")
    nodes = server.iserver.aspace._nodes
    values = [nodes[item.RequestedNewNodeId].attributes[ua.AttributeIds.Value] for item in items]
    del items

    changes = rounds = late = 0
    write_stats(args.stats, changes, rounds, late)
    async with server:
        print("ready", flush=True)
        start = time.time()
        while True:
            rounds += 1
            due = start + rounds
            now = datetime.datetime.now(datetime.timezone.utc)
            dv = ua.DataValue(
                ua.Variant(rounds, ua.VariantType.Int32), SourceTimestamp=now, ServerTimestamp=now
            )
            for n, attval in enumerate(values):
                attval.value = dv
                for handle, callback in list(attval.datachange_callbacks.items()):
                    await callback(handle, dv)
                changes += 1
                if n % 500 == 499:
                    await asyncio.sleep(0)
            write_stats(args.stats, changes, rounds, late)
            wait = due - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                late += 1
                start = time.time() - rounds  # the next round starts now


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
