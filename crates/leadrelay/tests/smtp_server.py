"""A real SMTP server for leadrelay's email tests (aiosmtpd).

Usage: python smtp_server.py DIR

Listens on 127.0.0.1 on a free port and writes the port to DIR/port once it
accepts connections. Every accepted message is written as DIR/msg-N.json:
the envelope (mail_from, rcpt_tos), the decoded headers, the text and HTML
bodies, and the raw message. Injected failures: each line of DIR/faults
(e.g. "451 4.7.1 Try again later") is the reply to one DATA command, first
line first. Refused recipients: each line of DIR/refuse is an address whose
RCPT TO is answered "550 5.1.1 ... Recipient address rejected", as a real
server does for an unknown mailbox (the other recipients are accepted).
Exits when its standard input closes (the test ended).
"""

import asyncio
import email
import email.policy
import json
import os
import socket
import sys
import threading

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.count = 0
        self.lock = threading.Lock()

    def next_fault(self):
        path = os.path.join(self.out_dir, "faults")
        with self.lock:
            try:
                with open(path, encoding="utf-8") as f:
                    lines = [l.rstrip("\r\n") for l in f if l.strip()]
            except FileNotFoundError:
                return None
            if not lines:
                return None
            with open(path, "w", encoding="utf-8") as f:
                f.write("".join(l + "\n" for l in lines[1:]))
            return lines[0]

    def refused(self):
        try:
            with open(os.path.join(self.out_dir, "refuse"), encoding="utf-8") as f:
                return {l.strip().lower() for l in f if l.strip()}
        except FileNotFoundError:
            return set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() in self.refused():
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        fault = self.next_fault()
        if fault:
            return fault
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        text = msg.get_body(preferencelist=("plain",))
        html = msg.get_body(preferencelist=("html",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "headers": {k.lower(): str(v) for k, v in msg.items()},
            "content_type": msg.get_content_type(),
            "text": text.get_content() if text is not None else None,
            "html": html.get_content() if html is not None else None,
            "raw": raw.decode("utf-8", "replace"),
        }
        with self.lock:
            self.count += 1
            n = self.count
        tmp = os.path.join(self.out_dir, f".msg-{n}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(tmp, os.path.join(self.out_dir, f"msg-{n}.json"))
        return "250 2.0.0 Message accepted for delivery"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    out_dir = sys.argv[1]
    handler = Handler(out_dir)
    controller = Controller(
        handler, hostname="127.0.0.1", port=free_port(), enable_SMTPUTF8=True
    )
    controller.start()
    with open(os.path.join(out_dir, ".port.tmp"), "w") as f:
        f.write(str(controller.port))
    os.replace(os.path.join(out_dir, ".port.tmp"), os.path.join(out_dir, "port"))
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
