"""The statements of the data generator: deterministic draws, helper tables, inserts.

Every "random" choice is ``hashint8extended(row number, seed * 1009 + salt)``, so one seed
gives the same ids, texts and timestamps on any server, in any plan order, on either path
of :mod:`backend_checks.datagen` (the serial one and the two-connection one run these same
statements, in different places).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from backend_checks.words import WORDS

if TYPE_CHECKING:
    from backend_checks.datagen import DatagenParams

__all__ = ["LoadSql"]

#: Distinct sentences at most (the pool has one per 20 messages).
_POOL_SIZE = 20_000
#: Words in a sentence at most (2 at least).
_MAX_WORDS = 16
#: bcrypt hashes of the password, shared round-robin by the users (see datagen).
_HASH_POOL = 16


class _Hash:
    """SQL expressions of deterministic pseudo-random values for a seed.

    Every constant next to these values is written ``::float8``: a bare ``1.5`` is numeric,
    and ``power(float8, numeric)`` runs in numeric arithmetic, ~10 us a call.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def h(self, expr: str, salt: int) -> str:
        return f"hashint8extended(({expr})::int8, {self.seed * 1009 + salt})"

    def u(self, expr: str, salt: int) -> str:
        """A uniform float in [0, 1)."""
        return f"(({self.h(expr, salt)} & 2147483647)::float8 / 2147483648.0)"

    def uuid(self, expr: str, salt: int) -> str:
        return (
            f"encode(int8send({self.h(expr, salt)}) || int8send({self.h(expr, salt + 1)}),"
            " 'hex')::uuid"
        )


class LoadSql:
    """The statements that fill the tables, for one data set and one place.

    ``data`` is the schema of the five tables' data (``public``, or the staging schema of
    the parallel path); ``helper`` the schema of the helper tables the inserts join
    (``pg_temp``: temporary, dropped at commit; or the staging schema, visible to every
    connection). The statements are the same on both paths, so one seed gives the same
    rows either way.
    """

    def __init__(self, p: DatagenParams, *, data: str = "public", helper: str = "pg_temp"):
        self.p = p
        self.hs = _Hash(p.seed)
        self.data = data
        self.helper = helper
        temp = helper == "pg_temp"
        # Helper tables are scratch: no WAL (unlogged) where they must outlive a transaction.
        self._create = "CREATE TEMP TABLE" if temp else "CREATE UNLOGGED TABLE"
        self._on_commit = " ON COMMIT DROP" if temp else ""

    def pool_size(self) -> int:
        """Distinct sentences: one per 20 messages, 1,000 to 20,000 (to_tsvector runs once
        each)."""
        return max(1_000, min(_POOL_SIZE, self.p.messages // 20))

    def conversations_stage(self) -> list[tuple[str, dict[str, Any]]]:
        """The conversations with their participants and read points (``_dl_conv``)."""
        p, hs, h = self.p, self.hs, self.helper
        users = p.users
        # Members are first_user + j * step (mod users): distinct as long as size * step <
        # users. Direct chats (90 %) get their two members inline; only groups need a
        # sub-select.
        member = "mod(first_user + {j} * step, " + str(users) + ")"
        create = f"""{self._create} {h}._dl_conv{self._on_commit} AS
        SELECT c, id, type, created_at, read_point,
               CASE WHEN type = 'direct'
                    THEN ARRAY[{hs.uuid(member.format(j=0), 1)}, {hs.uuid(member.format(j=1), 1)}]
                    ELSE ARRAY(SELECT {hs.uuid(member.format(j="j"), 1)}
                               FROM generate_series(0, size - 1) j ORDER BY j)
               END AS participants
        FROM (
          SELECT *, 1 + floor(step_u * greatest(({users} - 1) / size, 1))::int AS step
          FROM (
            SELECT c, {hs.uuid("c", 100)} AS id, type, first_user, step_u,
                   CASE WHEN type = 'group' THEN least({users}, 3 + floor(size_u * 6)::int)
                        ELSE 2 END AS size,
                   created_at, read_point
            FROM (
              SELECT c,
                CASE WHEN {hs.u("c", 101)} < %(group)s THEN 'group' ELSE 'direct' END AS type,
                floor({users} * power({hs.u("c", 102)}, 1.5::float8))::int AS first_user,
                {hs.u("c", 103)} AS step_u, {hs.u("c", 104)} AS size_u,
                %(anchor)s::timestamptz - make_interval(days => %(days)s)
                  - make_interval(secs => 30 * 86400 * {hs.u("c", 105)}) AS created_at,
                %(anchor)s::timestamptz - make_interval(secs => %(days)s * 86400.0 * least(1.0,
                  2 * %(unread)s * {hs.u("c", 106)} / greatest(1e-9, %(messages)s * (
                    power((c + 1)::float8 / %(convs)s, 1 / %(skew)s::float8)
                    - power(c::float8 / %(convs)s, 1 / %(skew)s::float8))))) AS read_point
              FROM generate_series(0, %(convs)s::int - 1) c
              OFFSET 0  -- computed once per row, not inlined into every use below
            ) base
          ) sized
          OFFSET 0
        ) stepped"""
        params = {
            "group": p.group_fraction,
            "anchor": p.anchor,
            "days": p.days,
            "unread": p.unread,
            "messages": p.messages,
            "skew": p.skew,
            "convs": p.conversations,
        }
        return [
            (create, params),
            # Row count and join keys for the plans (they hash it: no index); the
            # participants' array statistics would cost 10 ms and serve nothing.
            (f"ANALYZE {h}._dl_conv (c, id)", {}),
        ]

    def pool_stage(self) -> list[tuple[str, dict[str, Any]]]:
        """The sentence pool with its tsvector, computed once per sentence (``_dl_pool``).

        Sentence ``k`` has 2 to 16 words, word ``j`` drawn front-heavy from WORDS. The
        words are joined by one concat_ws of 16 CASEs (NULL past the sentence's end,
        skipped): no row per word and no sort per sentence, as a string_agg(... ORDER BY
        j) needs (15 % of the pool's time)."""
        hs, h = self.hs, self.helper
        words = [
            f"CASE WHEN {j} <= n THEN (%(words)s::text[])[1 + floor({len(WORDS)}"
            f" * power({hs.u(f'k * 64 + {j}', 201)}, 2.5::float8))::int] END"
            for j in range(1, _MAX_WORDS + 1)
        ]
        n = f"2 + floor({_MAX_WORDS - 2} * power({hs.u('k', 200)}, 1.5::float8))::int"
        create = f"""{self._create} {h}._dl_pool{self._on_commit} AS
        SELECT k, content, to_tsvector('english', content) AS search_vector
        FROM (
          SELECT k, concat_ws(' ', {", ".join(words)}) AS content
          FROM (SELECT k, {n} AS n FROM generate_series(0, {self.pool_size() - 1}) k
                OFFSET 0) sized
        ) sentences"""
        return [
            (create, {"words": list(WORDS)}),
            (f"ANALYZE {h}._dl_pool (k)", {}),
        ]

    def passwords_stage(self) -> tuple[str, dict[str, Any]]:
        """The pool of bcrypt hashes of the story's password (``_dl_pw``). Each salt is
        drawn from the seed, not gen_salt's randomness, so the same seed gives the same
        encrypted_password too (a test user's known password: nothing to protect)."""
        pool = min(_HASH_POOL, self.p.users)
        salt = (
            "'$2a$04$' || translate(left(encode(sha256(convert_to("
            f"'devicelab {int(self.p.seed)} ' || k, 'UTF8')), 'base64'), 22), '+', '.')"
        )
        return (
            f"""{self._create} {self.helper}._dl_pw{self._on_commit} AS
            SELECT k, crypt('password123', {salt}) AS hash
            FROM generate_series(0, {pool - 1}) k""",
            {},
        )

    def users(self) -> tuple[str, dict[str, Any]]:
        """Insert auth.users (always into ``auth``: the platform's table)."""
        p, hs = self.p, self.hs
        pool = min(_HASH_POOL, p.users)
        return (
            f"""INSERT INTO auth.users (id, aud, role, email, encrypted_password,
                                        email_confirmed_at, created_at, updated_at)
            SELECT {hs.uuid("i - 1", 1)}, 'authenticated', 'authenticated',
                   'testuser' || i || '@example.com', pw.hash, %(t)s, %(t)s, %(t)s
            FROM generate_series(1, {p.users}) i
            JOIN {self.helper}._dl_pw pw ON pw.k = mod(i, {pool})""",
            {"t": p.anchor},
        )

    def profiles(self) -> tuple[str, dict[str, Any]]:
        """Insert the profiles."""
        p, hs = self.p, self.hs
        return (
            f"""INSERT INTO {self.data}.profiles (id, username, full_name, email, created_at,
                                                  updated_at)
            SELECT {hs.uuid("i - 1", 1)}, 'testuser' || i, 'Test User ' || i,
                   'testuser' || i || '@example.com', %(t)s, %(t)s
            FROM generate_series(1, {p.users}) i""",
            {"t": p.anchor},
        )

    def _conversation_of(self, i: str) -> str:
        """The conversation number (0-based) of message ``i``: skewed, a few hold most."""
        p, hs = self.p, self.hs
        return (
            f"least({p.conversations} - 1, floor({p.conversations}"
            f" * power({hs.u(i, 300)}, {p.skew}::float8))::int)"
        )

    @staticmethod
    def _sent_at(u: str) -> str:
        """The created_at of a message whose time draw is ``u`` (a later draw, an older
        message: never newer)."""
        return "%(anchor)s::timestamptz - make_interval(secs => %(days)s * 86400.0 * " + u + ")"

    def _draws(self, first: int, last: int) -> str:
        """The per-message draws of messages ``first``..``last``, a sub-select. (OFFSET 0
        computes each draw once instead of inlining it into every expression that uses
        it.)"""
        hs = self.hs
        return f"""(
              SELECT i, {hs.uuid("i", 310)} AS id,
                     {self._conversation_of("i")} AS c,
                     {hs.u("i", 302)} AS u_sender,
                     {self._sent_at(hs.u("i", 301))} AS created_at,
                     floor({self.pool_size()} * {hs.u("i", 303)})::int AS k,
                     CASE WHEN u_kind < 0.1 THEN 'image' WHEN u_kind < 0.2 THEN 'video'
                          ELSE 'text' END AS kind
              FROM generate_series({first}, {last}) i,
                   LATERAL (SELECT {hs.u("i", 305)} AS u_kind) kind_draw
              OFFSET 0
            ) r"""

    #: The sender of draw ``r`` in conversation ``cv``.
    _SENDER = "cv.participants[1 + floor(r.u_sender * cardinality(cv.participants))::int]"

    #: The columns :meth:`message_rows` gives, in order.
    MESSAGE_COLUMNS = (
        "id, conversation_id, sender_id, content, type, media_url, created_at, search_vector"
    )

    def message_rows(self, first: int, last: int) -> tuple[str, dict[str, Any]]:
        """The SELECT of messages ``first``..``last`` (1-based), MESSAGE_COLUMNS."""
        p, h = self.p, self.helper
        return (
            f"""SELECT r.id, cv.id AS conversation_id, {self._SENDER} AS sender_id,
                   pool.content, r.kind AS type,
                   CASE r.kind WHEN 'image' THEN 'media/' || cv.id || '/' || r.i || '.jpg'
                               WHEN 'video' THEN 'media/' || cv.id || '/' || r.i || '.mp4'
                   END AS media_url,
                   r.created_at, pool.search_vector
            FROM {self._draws(first, last)}
            JOIN {h}._dl_conv cv ON cv.c = r.c
            JOIN {h}._dl_pool pool ON pool.k = r.k""",
            {"anchor": p.anchor, "days": p.days},
        )

    def messages(self, first: int = 1, last: int | None = None) -> tuple[str, dict[str, Any]]:
        """Insert messages ``first``..``last`` (default: all)."""
        rows, params = self.message_rows(first, self.p.messages if last is None else last)
        return f"INSERT INTO {self.data}.messages ({self.MESSAGE_COLUMNS}) {rows}", params

    def receipts(self) -> tuple[str, dict[str, Any]]:
        """Insert the read receipts (after the messages, read back: cheaper than drawing
        them again): every message older than its conversation's read point, by every
        participant but the sender. (unnest in the select list: a LATERAL unnest rescans a
        function per message, ~30 % more time.)"""
        p, hs = self.p, self.hs
        delay = hs.u(f"uuid_hash_extended(m.id, {p.seed})", 400)
        return (
            f"""INSERT INTO {self.data}.message_read_receipts (message_id, user_id, read_at)
            SELECT m.id, m.user_id,
                   least(%(anchor)s::timestamptz,
                         m.created_at + make_interval(secs => 7200 * {delay}))
            FROM (SELECT m.id, m.sender_id, m.created_at, unnest(cv.participants) AS user_id
                  FROM {self.data}.messages m
                  JOIN {self.helper}._dl_conv cv ON cv.id = m.conversation_id
                  WHERE m.created_at < cv.read_point) m
            WHERE m.user_id <> m.sender_id""",
            {"anchor": p.anchor},
        )

    def conversations(self) -> tuple[str, dict[str, Any]]:
        """Insert the conversations. Their last_message_at (the newest message's created_at)
        comes from the messages' draws, not the messages table: the smallest time draw of
        each conversation's messages is its newest, so this needs only the conversations
        stage, and the two-connection path runs it while the messages are still loading."""
        p, hs = self.p, self.hs
        return (
            f"""INSERT INTO {self.data}.conversations (id, type, name, participants, created_by,
                                                       created_at, updated_at, last_message_at)
            SELECT cv.id, cv.type, CASE WHEN cv.type = 'group' THEN 'Group ' || cv.c END,
                   cv.participants, cv.participants[1], cv.created_at,
                   coalesce(lm.last_at, cv.created_at), lm.last_at
            FROM {self.helper}._dl_conv cv
            LEFT JOIN (SELECT c, {self._sent_at("min(u)")} AS last_at
                       FROM (SELECT {self._conversation_of("i")} AS c, {hs.u("i", 301)} AS u
                             FROM generate_series(1, {p.messages}) i) draws
                       GROUP BY c) lm
                   ON lm.c = cv.c""",
            {"anchor": p.anchor, "days": p.days},
        )
