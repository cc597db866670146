"""The dispatcher: sessions, unknown APIs and unexpected errors, without a network."""

import json

import psycopg2
from twisted.trial import unittest

from marketplace.contract.errors import INVALID_SESSION, ApiError
from marketplace.frame.dispatch import Api, Dispatcher, Reply, Session
# The database layer names its errors that mean "unavailable" as it is
# imported, as it is in every daemon.
import marketplace.postgres.database  # noqa: F401


def frame(api, session_id=None, payload=None):
    return json.dumps(
        {"type": "request", "api": api, "session_id": session_id, "payload": payload or {}}
    ).encode()


class DispatcherTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.seen = []

        async def authenticate(session_id):
            if session_id != "good":
                raise ApiError(INVALID_SESSION, "no such session")
            return Session(7, "key")

        async def whoami(call):
            self.seen.append(call.session)
            return {"user": call.session.user_id}

        async def login(call):
            return Reply({"session_id": "new"}, "new")

        async def broken(call):
            raise RuntimeError("a bug")

        async def database_gone(call):
            raise psycopg2.OperationalError("server closed the connection")

        self.dispatcher = Dispatcher(
            "test",
            {
                "WhoAmI": Api(whoami),
                "Login": Api(login, needs_session=False),
                "Broken": Api(broken, needs_session=False),
                "Gone": Api(database_gone, needs_session=False),
            },
            authenticate,
        )

    def answer(self, data: bytes) -> dict:
        return json.loads(self.successResultOf(self.dispatcher.handle_frame(data)))

    def test_session_is_checked_and_passed(self):
        answer = self.answer(frame("WhoAmI", "good"))
        self.assertEqual(answer["payload"], {"user": 7})
        self.assertEqual(self.seen, [Session(7, "key")])

    def test_not_logged_in(self):
        self.assertEqual(self.answer(frame("WhoAmI"))["error"]["code"], "NOT_LOGGED_IN")
        self.assertEqual(self.seen, [])

    def test_invalid_session(self):
        answer = self.answer(frame("WhoAmI", "bad"))
        self.assertEqual(answer["error"]["code"], "INVALID_SESSION")
        self.assertEqual(answer["session_id"], "bad")

    def test_unknown_api(self):
        self.assertEqual(self.answer(frame("Nope"))["error"]["code"], "UNKNOWN_API")

    def test_reply_sets_session_id(self):
        self.assertEqual(self.answer(frame("Login"))["session_id"], "new")

    def test_bug_is_internal_and_logged(self):
        answer = self.answer(frame("Broken"))
        self.assertEqual(answer["error"]["code"], "INTERNAL")
        self.assertNotIn("a bug", answer["error"]["message"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_database_errors_are_unavailable(self):
        self.assertEqual(self.answer(frame("Gone"))["error"]["code"], "UNAVAILABLE")

    def test_malformed_frame(self):
        answer = self.answer(b"\x00garbage")
        self.assertEqual(answer["type"], "error")
        self.assertEqual(answer["error"]["code"], "BAD_REQUEST")
