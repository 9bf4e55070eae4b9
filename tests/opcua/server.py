"""An OPC UA server for tests/opcua.rs, built on python asyncua (pinned in scripts/test): an
independent implementation to test Shopfloor's OPC UA source against.

Serves, in namespace `urn:shopfloor:test`, one variable of every built-in scalar type the
source maps (string node ids named after the type), an Int32 array, a value with an Uncertain
status, one with a Bad status (the Double
writable by clients, the others read-only), and a UInt32 `Counter` that counts up every 200 ms. The static
values carry the source timestamp given by --stamp, so a restarted server serves them with
the same timestamps (the client must not write them twice).

    server.py PORT [--stamp UNIX_S] [--items N] [--per-subscription N] [--services FILE]
                   [--secure DIR] [--browse-page N] [--lose N [--forget]] [--expire-after S]
                   [--publish-limit N]

--items N adds UInt16 variables Item0..Item{N-1}; --per-subscription N answers
BadTooManyMonitoredItems for monitored items beyond N in one subscription (asyncua has no
such limit of its own; S7-1200s and others do); --services FILE appends the name of every
service request the server receives, one a line (the read-only test reads it); --secure DIR
offers only SignAndEncrypt with the --policy (default Basic256Sha256), with a certificate made in DIR (server_cert.der,
server_key.pem) and one user, `operator` with password `s3cret`; --user-cert DIR also makes a
user certificate in DIR (user_cert.der, user_key.pem) and accepts it as an X.509 identity;
--client-cert DIR makes a client application certificate in DIR (client_cert.der,
client_key.pem, application URI urn:shopfloor:secure) and refuses sessions with any other;
--browse-page N answers Browse with at most N references per node and a continuation point,
and serves BrowseNext. --lose N loses every Nth data message of every subscription on the
way: the client gets a keep-alive in its place (so the next data message's sequence number
skips one), while the server keeps the message for Republish; with --forget it keeps it not
(Republish finds nothing). --expire-after S ends the subscriptions open S seconds after the
first one was made as if they had expired, once: a StatusChangeNotification BadTimeout, then
they are gone. --publish-limit N holds at most N Publish requests and answers the oldest
with BadTooManyPublishRequests when one more comes (asyncua holds subscriptions + 10).

Prints `ready` on stdout when it listens.
"""

import argparse
import asyncio
import datetime
import logging
import sys
from pathlib import Path

from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server import uaprocessor
from asyncua.server.internal_subscription import InternalSubscription
from asyncua.server.monitored_item_service import MonitoredItemService
from asyncua.server.user_managers import UserManager
from asyncua.ua.ua_binary import struct_from_binary

NAMESPACE = "urn:shopfloor:test"

# (node name, variant type, value) of every built-in type the source maps.
SCALARS = [
    ("Boolean", ua.VariantType.Boolean, True),
    ("SByte", ua.VariantType.SByte, -5),
    ("Byte", ua.VariantType.Byte, 200),
    ("Int16", ua.VariantType.Int16, -1234),
    ("UInt16", ua.VariantType.UInt16, 54321),
    ("Int32", ua.VariantType.Int32, -123456),
    ("UInt32", ua.VariantType.UInt32, 3000000000),
    ("Int64", ua.VariantType.Int64, -9000000000000000),
    ("UInt64", ua.VariantType.UInt64, 9223372036854775807),
    ("Float", ua.VariantType.Float, 1.5),
    ("Double", ua.VariantType.Double, 2.25),
    ("String", ua.VariantType.String, "运行 AUTO"),
    (
        "DateTime",
        ua.VariantType.DateTime,
        datetime.datetime(2026, 12, 6, 8, 30, 15, tzinfo=datetime.timezone.utc),
    ),
    ("LocalizedText", ua.VariantType.LocalizedText, ua.LocalizedText("Ready", "en")),
]


class OneUser(UserManager):
    """One user, `operator` / `s3cret`, or the holder of the user certificate made with
    --user-cert; anyone else is refused."""

    user_cert_der = None

    def get_user(self, iserver, username=None, password=None, certificate=None):
        if username == "operator" and password == "s3cret":
            return User(role=UserRole.User, name="operator")
        if certificate is not None and self.user_cert_der is not None:
            from cryptography.hazmat.primitives.serialization import Encoding

            der = certificate if isinstance(certificate, bytes) else certificate.public_bytes(Encoding.DER)
            if der == self.user_cert_der:
                return User(role=UserRole.User, name="certificate user")
        return None


def log_services(path):
    """Appends the name of every request the server handles to `path`."""
    original = uaprocessor.UaProcessor._process_message

    async def logged(self, typeid, requesthdr, seqhdr, body):
        name = ua.ObjectIdNames.get(typeid.Identifier, str(typeid))
        with open(path, "a") as f:
            f.write(name.removesuffix("_Encoding_DefaultBinary") + "\n")
        return await original(self, typeid, requesthdr, seqhdr, body)

    uaprocessor.UaProcessor._process_message = logged


def page_browsing(page):
    """Answers Browse with at most `page` references per node (fewer if the client asks for
    fewer) and a continuation point for the rest, and serves BrowseNext with them: asyncua
    returns every reference at once and has no BrowseNext, which real servers with large
    address spaces (a SINUMERIK's /Channel, a PLC's data blocks) do use."""
    original = uaprocessor.UaProcessor._process_message
    pending = {}
    serial = [0]

    def cut(result, limit):
        if len(result.References) > limit:
            serial[0] += 1
            point = b"cp%d" % serial[0]
            pending[point] = (result.References[limit:], limit)
            result.References = result.References[:limit]
            result.ContinuationPoint = point
        return result

    async def paged(self, typeid, requesthdr, seqhdr, body):
        if typeid == ua.NodeId(ua.ObjectIds.BrowseRequest_Encoding_DefaultBinary) and self.session:
            params = struct_from_binary(ua.BrowseParameters, body)
            asked = params.RequestedMaxReferencesPerNode
            limit = min(page, asked) if asked else page
            response = ua.BrowseResponse()
            response.Results = [cut(r, limit) for r in await self.session.browse(params)]
            self.send_response(requesthdr.RequestHandle, seqhdr, response)
            return True
        if typeid == ua.NodeId(ua.ObjectIds.BrowseNextRequest_Encoding_DefaultBinary) and self.session:
            params = struct_from_binary(ua.BrowseNextParameters, body)
            results = []
            for point in params.ContinuationPoints:
                result = ua.BrowseResult()
                entry = pending.pop(point, None)
                if entry is None:
                    result.StatusCode = ua.StatusCode(ua.StatusCodes.BadContinuationPointInvalid)
                elif not params.ReleaseContinuationPoints:
                    result.References = entry[0]
                    cut(result, entry[1])
                results.append(result)
            response = ua.BrowseNextResponse()
            response.Parameters.Results = results
            self.send_response(requesthdr.RequestHandle, seqhdr, response)
            return True
        return await original(self, typeid, requesthdr, seqhdr, body)

    uaprocessor.UaProcessor._process_message = paged


def limit_items_per_subscription(limit):
    original = MonitoredItemService.create_monitored_items

    async def limited(self, params):
        room = max(0, limit - len(self._monitored_items))
        accepted = list(params.ItemsToCreate[:room])
        refused = params.ItemsToCreate[room:]
        params.ItemsToCreate = accepted
        results = await original(self, params)
        for _ in refused:
            r = ua.MonitoredItemCreateResult()
            r.StatusCode = ua.StatusCode(ua.StatusCodes.BadTooManyMonitoredItems)
            results.append(r)
        return results

    MonitoredItemService.create_monitored_items = limited


def lose_messages(every, forget):
    original = InternalSubscription._pop_publish_result

    def losing(self):
        result = original(self)
        message = result.NotificationMessage
        if message.NotificationData and message.SequenceNumber % every == 0:
            if forget:
                self._not_acknowledged_results.pop(message.SequenceNumber, None)
            # What the client gets instead: a keep-alive, which carries the next number.
            lost = ua.PublishResult()
            lost.SubscriptionId = result.SubscriptionId
            lost.NotificationMessage.SequenceNumber = self._notification_seq
            lost.AvailableSequenceNumbers = list(self._not_acknowledged_results.keys())
            return lost
        return result

    InternalSubscription._pop_publish_result = losing


async def expire_subscriptions(service, after):
    while not service.subscriptions:
        await asyncio.sleep(0.1)
    await asyncio.sleep(after)
    ids = list(service.subscriptions)
    for i in ids:
        await service.subscriptions[i].monitored_item_srv.trigger_statuschange(
            ua.StatusCode(ua.StatusCodes.BadTimeout)
        )
    await asyncio.sleep(1)
    await service.delete_subscriptions(ids)


async def client_certificate(directory, stem, uri):
    """Makes a self-signed client certificate `<stem>_cert.der` and its key `<stem>_key.pem` in
    `directory`; returns the certificate's DER bytes."""
    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    directory.mkdir(parents=True, exist_ok=True)
    await setup_self_signed_certificate(
        directory / f"{stem}_key.pem",
        directory / f"{stem}_cert.der",
        uri,
        "127.0.0.1",
        [ExtendedKeyUsageOID.CLIENT_AUTH],
        {"commonName": f"shopfloor test {stem}"},
    )
    return (directory / f"{stem}_cert.der").read_bytes()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--stamp", type=float, default=None)
    parser.add_argument("--items", type=int, default=0)
    parser.add_argument("--per-subscription", type=int, default=0)
    parser.add_argument("--services", default=None)
    parser.add_argument("--secure", default=None)
    parser.add_argument("--user-cert", default=None)
    parser.add_argument("--browse-page", type=int, default=0)
    parser.add_argument("--lose", type=int, default=0)
    parser.add_argument("--forget", action="store_true")
    parser.add_argument("--expire-after", type=float, default=None)
    parser.add_argument("--publish-limit", type=int, default=0)
    parser.add_argument("--client-cert", default=None)
    parser.add_argument(
        "--policy",
        default="Basic256Sha256",
        choices=["Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"],
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    if args.browse_page:
        page_browsing(args.browse_page)
    if args.services:
        log_services(args.services)
    if args.per_subscription:
        limit_items_per_subscription(args.per_subscription)
    if args.lose:
        lose_messages(args.lose, args.forget)
    if args.publish_limit:
        uaprocessor.UaProcessor.publish_request_limit = lambda _self, _subscriptions: args.publish_limit

    users = OneUser()
    server = Server(user_manager=users if args.secure else None)
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{args.port}/")
    server.set_server_name("shopfloor test server")
    if args.secure:
        from asyncua.crypto.cert_gen import setup_self_signed_certificate
        from cryptography.x509.oid import ExtendedKeyUsageOID

        d = Path(args.secure)
        d.mkdir(parents=True, exist_ok=True)
        cert, key = d / "server_cert.der", d / "server_key.pem"
        uri = "urn:shopfloor:test:server"
        await server.set_application_uri(uri)
        await setup_self_signed_certificate(
            key, cert, uri, "127.0.0.1", [ExtendedKeyUsageOID.SERVER_AUTH], {"commonName": "shopfloor test"}
        )
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))
        server.set_security_policy([getattr(ua.SecurityPolicyType, f"{args.policy}_SignAndEncrypt")])
        if args.client_cert:
            from asyncua.server.internal_session import ServiceError
            from cryptography.hazmat.primitives.serialization import Encoding

            expected = await client_certificate(Path(args.client_cert), "client", "urn:shopfloor:secure")

            async def only_the_test_client(cert, _description):
                if cert.public_bytes(Encoding.DER) != expected:
                    raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

            server.set_certificate_validator(only_the_test_client)
        if args.user_cert:
            users.user_cert_der = await client_certificate(
                Path(args.user_cert), "user", "urn:shopfloor:test:user"
            )
            server.set_security_IDs(["Username", "Basic256Sha256"])
        else:
            server.set_security_IDs(["Username"])
    else:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])

    ns = await server.register_namespace(NAMESPACE)
    objects = server.nodes.objects
    machine = await objects.add_object(ua.NodeId("Machine", ns), "Machine")
    stamp = (
        datetime.datetime.fromtimestamp(args.stamp, datetime.timezone.utc)
        if args.stamp is not None
        else datetime.datetime.now(datetime.timezone.utc)
    )

    async def variable(name, vtype, value, status=ua.StatusCodes.Good):
        node = await machine.add_variable(ua.NodeId(name, ns), name, ua.Variant(value, vtype), vtype)
        await node.write_value(
            ua.DataValue(
                ua.Variant(value, vtype),
                StatusCode=ua.StatusCode(status),
                SourceTimestamp=stamp,
                ServerTimestamp=stamp,
            )
        )
        return node

    for name, vtype, value in SCALARS:
        node = await variable(name, vtype, value)
        if name == "Double":
            await node.set_writable()
    await variable("Int32Array", ua.VariantType.Int32, [10, 20, 30])
    await variable("Uncertain", ua.VariantType.Double, 7.5, ua.StatusCodes.UncertainLastUsableValue)
    await variable("Bad", ua.VariantType.Double, 0.0, ua.StatusCodes.BadSensorFailure)
    for i in range(args.items):
        await variable(f"Item{i}", ua.VariantType.UInt16, i)
    counter = await variable("Counter", ua.VariantType.UInt32, 0)

    async with server:
        expiry = None
        if args.expire_after is not None:
            expiry = asyncio.create_task(expire_subscriptions(server.iserver.subscription_service, args.expire_after))
        print("ready", flush=True)
        n = 0
        while True:
            await asyncio.sleep(0.2)
            n += 1
            now = datetime.datetime.now(datetime.timezone.utc)
            await counter.write_value(
                ua.DataValue(ua.Variant(n, ua.VariantType.UInt32), SourceTimestamp=now, ServerTimestamp=now)
            )


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
