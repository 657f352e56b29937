#!/usr/bin/env python3
"""An S3 server for bk's tests: moto's S3 on a loopback port.

    python3 s3_server.py --port 0 [--bucket NAME]... [--state FILE] [--auth FILE]

Prints `ready PORT` on stdout once it accepts connections (`--port 0`
picks a free port). It is `moto_server` plus what the tests need:

--bucket NAME   create the bucket before serving (bk creates no buckets).
--state FILE    load the buckets (objects, metadata and times) from FILE if
                it exists, and save them there on SIGTERM or SIGINT before
                exiting, so that a server stopped mid-backup and started
                again on the same port still holds every object it
                acknowledged: a restart, like a real server's. On the
                signal it stops accepting connections, answers requests on
                open connections with 503, lets the requests already being
                handled finish, saves, and exits (dropping every
                connection): what it acknowledged is saved, nothing after.
--auth FILE     check credentials and signatures (moto accepts any by
                default): make an IAM user allowed to do everything, write
                its {"access_key_id", "secret_access_key"} to FILE, and
                from then on answer a request with an unknown key or a bad
                signature with InvalidAccessKeyId / SignatureDoesNotMatch.

Without moto it exits with status 3 and says what to install.
"""

import argparse
import json
import os
import pickle
import signal
import sys
import threading
from urllib.parse import quote, unquote

try:
    from moto import settings
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.iam import access_control
    from moto.iam.models import iam_backends
    from moto.s3.models import s3_backends
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server
except ImportError as e:  # pragma: no cover - depends on the machine
    sys.stderr.write(
        f"s3_server.py: cannot import moto's server ({e}); the S3 tests need it: "
        "python3 -m pip install 'moto[server]'\n"
    )
    sys.exit(3)

PARTITION = "aws"
REGION = "us-east-1"


def s3_backend():
    return s3_backends[DEFAULT_ACCOUNT_ID][PARTITION]


def load_state(path):
    with open(path, "rb") as f:
        buckets = pickle.load(f)
    backend = s3_backend()
    for name, bucket in buckets.items():
        backend.buckets[name] = bucket
        s3_backends.bucket_accounts[name] = (PARTITION, DEFAULT_ACCOUNT_ID)


def save_state(path):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        pickle.dump(dict(s3_backend().buckets), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def fix_signature_check():
    """moto checks a signature against the request's query as werkzeug
    decoded it (`prefix=bk/`), while clients sign it percent-encoded
    (`prefix=bk%2F`): every listing under a prefix with a '/' would be
    refused (boto3's too). Re-encode the query the way SigV4 does first."""
    original = access_control.IAMRequestBase._create_aws_request

    def create_aws_request(self):
        path, sep, query = self._path.partition("?")
        if sep:
            pairs = []
            for pair in query.split("&"):
                k, eq, v = pair.partition("=")
                pairs.append(
                    quote(unquote(k), safe="-_.~") + eq + quote(unquote(v), safe="-_.~")
                )
            self._path = path + "?" + "&".join(pairs)
        return original(self)

    access_control.IAMRequestBase._create_aws_request = create_aws_request


def enable_auth(path):
    iam = iam_backends[DEFAULT_ACCOUNT_ID][PARTITION]
    iam.create_user(REGION, "bk-test")
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
    iam.put_user_policy("bk-test", "everything", json.dumps(policy))
    key = iam.create_access_key("bk-test")
    with open(path, "w") as f:
        json.dump(
            {
                "access_key_id": key.access_key_id,
                "secret_access_key": key.secret_access_key,
            },
            f,
        )
    fix_signature_check()
    # Every request from now on is authenticated and authorised.
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--bucket", action="append", default=[])
    p.add_argument("--state")
    p.add_argument("--auth")
    a = p.parse_args()

    if a.state and os.path.exists(a.state):
        load_state(a.state)
    backend = s3_backend()
    for name in a.bucket:
        if name not in backend.buckets:
            backend.create_bucket(name, REGION)
    if a.auth:
        enable_auth(a.auth)

    moto_app = DomainDispatcherApplication(create_backend_app)
    cond = threading.Condition()
    busy = [0]
    stopping = [False]

    def app(environ, start_response):
        with cond:
            if stopping[0]:
                start_response(
                    "503 Service Unavailable",
                    [("Content-Type", "text/plain"), ("Connection", "close")],
                )
                return [b"the server is stopping\n"]
            busy[0] += 1
        try:
            # Run the whole request (every change it makes) while counted.
            return list(moto_app(environ, start_response))
        finally:
            with cond:
                busy[0] -= 1
                cond.notify_all()

    server = make_server(a.host, a.port, app, threaded=True)

    def stop(signum, frame):
        with cond:
            stopping[0] = True
        # shutdown() waits for serve_forever() to return: not from the
        # thread that runs it.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"ready {server.server_address[1]}", flush=True)
    server.serve_forever()
    server.server_close()
    with cond:
        cond.wait_for(lambda: busy[0] == 0, timeout=60)
    if a.state:
        save_state(a.state)
    sys.stdout.flush()
    sys.stderr.flush()
    # Exit now, dropping open (keep-alive) connections and their threads.
    os._exit(0)


if __name__ == "__main__":
    main()
