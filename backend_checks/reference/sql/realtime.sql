-- devicelab reference Realtime: change capture with triggers and LISTEN/NOTIFY.
--
-- Installed idempotently by backend_checks.reference.realtime_capture at server start
-- (the whole file runs in one transaction under an advisory lock, so two servers starting
-- at once do not race on CREATE OR REPLACE).
--
-- Each watched table gets one AFTER ROW trigger. It notifies channel `devicelab_realtime`
-- with the whole change (schema, table, type, commit_timestamp, record, old_record) when
-- the JSON text fits in a NOTIFY payload (PostgreSQL refuses payloads of 8000 bytes or
-- more); a larger change is written to devicelab_realtime.spill and only its id is
-- notified, so big rows are delivered whole instead of being cut or lost. NOTIFY is
-- transactional: listeners see the change only after the commit, in commit order.

create schema if not exists devicelab_realtime;
revoke all on schema devicelab_realtime from public;

create table if not exists devicelab_realtime.spill (
    id bigserial primary key,
    payload jsonb not null,
    created_at timestamptz not null default now()
);

-- The backends of the running servers' LISTEN connections. The trigger does nothing while
-- none is here: a change no server listens for cost its writer a to_jsonb and a NOTIFY for
-- nothing (about 35 us a row: 100K generated messages with their receipts took 5 s more).
-- A server adds its row at start and removes it at stop; rows of backends gone (a server
-- killed) are removed at the next start.
create table if not exists devicelab_realtime.listeners (
    pid integer primary key,
    since timestamptz not null default now()
);
revoke all on devicelab_realtime.listeners from public;

-- The trigger function runs as its owner (the installer) so that any role allowed to
-- write the table can also write the spill table, which no API role may read.
create or replace function devicelab_realtime.capture() returns trigger
language plpgsql
security definer
set search_path = pg_catalog
as $$
declare
    body jsonb;
    body_text text;
    spill_id bigint;
begin
    if not exists (select from devicelab_realtime.listeners) then
        return null;
    end if;
    body := jsonb_build_object(
        'schema', tg_table_schema,
        'table', tg_table_name,
        -- The table's oid: a table rebuilt under the same name (datagen swaps new tables
        -- in) has a new one, and the server must not go on with the old one's facts.
        'relid', tg_relid,
        'type', tg_op,
        -- Supabase sends the WAL commit time; a trigger cannot know it, so this is the
        -- time the row was written, in the same ISO-8601 UTC millisecond format.
        'commit_timestamp', to_char(clock_timestamp() at time zone 'utc',
                                    'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'record', case when tg_op <> 'DELETE' then to_jsonb(new) end,
        'old_record', case when tg_op <> 'INSERT' then to_jsonb(old) end
    );
    body_text := body::text;
    if octet_length(body_text) < 7900 then
        perform pg_notify('devicelab_realtime', body_text);
    else
        insert into devicelab_realtime.spill (payload) values (body) returning id into spill_id;
        perform pg_notify('devicelab_realtime', json_build_object('spill', spill_id)::text);
    end if;
    return null;
end
$$;

-- Installs the capture trigger on one table; a no-op when it is already there.
create or replace function devicelab_realtime.watch(entity regclass) returns boolean
language plpgsql
set search_path = pg_catalog
as $$
begin
    perform pg_advisory_xact_lock(hashtext('devicelab_realtime.watch'));
    if exists (select 1 from pg_trigger
               where tgrelid = entity and tgname = 'devicelab_realtime_capture') then
        return false;
    end if;
    execute format(
        'create trigger devicelab_realtime_capture after insert or update or delete on %s '
        'for each row execute function devicelab_realtime.capture()', entity);
    return true;
end
$$;

drop function if exists devicelab_realtime.visible(regclass, jsonb, text[], text[]);

-- Creates devicelab_realtime."visible_<table oid>"(key jsonb, roles text[], claims text[]):
-- which of the given principals may SELECT the row whose values are `key` right now.
--
-- For principal i it switches to roles[i] with request.jwt.claims = claims[i] (as the REST
-- API does, so auth.uid() and every RLS policy see that user) and looks the row up by its
-- primary key. The lookup is static SQL in a function made for the table, so PL/pgSQL
-- keeps its plan (re-planned only when the role changes; callers sort by role) and one
-- principal costs tens of microseconds. An error fails the whole call: the caller then
-- withholds the change from everyone. Returns one boolean per principal. Tables without a
-- primary key get no function (Supabase refuses their changes too).
create or replace function devicelab_realtime.install_visibility(entity regclass)
returns boolean
language plpgsql
set search_path = pg_catalog
as $$
declare
    qualified text;
    match text;
begin
    select format('%I.%I', n.nspname, c.relname)
      into qualified
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where c.oid = entity;
    select string_agg(format('t.%1$I = k.%1$I', a.attname), ' and ' order by a.attnum)
      into match
      from pg_index i
      join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any (i.indkey)
     where i.indrelid = entity and i.indisprimary;
    if match is null then
        return false;
    end if;
    execute format($f$
        create or replace function devicelab_realtime.%1$I(key jsonb, roles text[], claims text[])
        returns boolean[]
        language plpgsql
        volatile
        as $body$
        declare
            k %2$s;
            n integer := coalesce(pg_catalog.array_length(roles, 1), 0);
            answers boolean[] := pg_catalog.array_fill(false, array[n]);
            acting text := '';
            i integer;
        begin
            k := pg_catalog.jsonb_populate_record(null::%2$s, key);
            for i in 1 .. n loop
                if roles[i] is distinct from acting then
                    perform pg_catalog.set_config('role', roles[i], true);
                    perform pg_catalog.set_config('request.jwt.claim.role', roles[i], true);
                    acting := roles[i];
                end if;
                perform pg_catalog.set_config('request.jwt.claims', claims[i], true);
                perform pg_catalog.set_config('request.jwt.claim.sub',
                                              coalesce(claims[i]::jsonb ->> 'sub', ''), true);
                answers[i] := exists (select 1 from %2$s t where %3$s);
            end loop;
            perform pg_catalog.set_config('role', 'none', true);
            return answers;
        end
        $body$
    $f$, 'visible_' || entity::oid, qualified, match);
    execute format('revoke all on function devicelab_realtime.%I(jsonb, text[], text[]) from public',
                   'visible_' || entity::oid);
    return true;
end
$$;

revoke all on function devicelab_realtime.capture() from public;
revoke all on function devicelab_realtime.watch(regclass) from public;
revoke all on function devicelab_realtime.install_visibility(regclass) from public;

-- Realtime Authorization (private channels), as Supabase's `realtime` schema has it: a
-- join with config.private is allowed when the user's role may SELECT a probe row of the
-- topic in realtime.messages, and a broadcast or presence track when it may INSERT one;
-- the policies read the topic with realtime.topic(). Made only where missing: on a
-- database that has Supabase's own, ours never replaces it.
do $$
begin
    if to_regclass('realtime.messages') is null then
        create schema if not exists realtime;
        create table realtime.messages (
            topic text not null,
            extension text not null,
            payload jsonb,
            event text,
            private boolean default false,
            updated_at timestamp without time zone not null default now(),
            inserted_at timestamp without time zone not null default now(),
            id uuid not null default gen_random_uuid(),
            primary key (id, inserted_at)
        );
        -- Row-level security on and no policy: every private channel is closed until the
        -- project writes policies for it (as on a new Supabase project).
        alter table realtime.messages enable row level security;
    end if;
    -- Broadcast from the database: a row inserted here with extension 'broadcast' goes to
    -- the channels of its topic (private or public by its `private`), as Supabase's
    -- Realtime does; the server hears it through the capture trigger it puts on this
    -- table. send() and broadcast_changes() are Supabase's helpers for it.
    if to_regprocedure('realtime.send(jsonb, text, text, boolean)') is null then
        create function realtime.send(payload jsonb, event text, topic text,
                                      private boolean default true) returns void
        language plpgsql
        as $f$
        begin
            begin
                perform set_config('realtime.topic', topic, true);
                insert into realtime.messages (payload, event, topic, private, extension)
                values (payload, event, topic, private, 'broadcast');
            exception when others then
                -- As Supabase's: a failed send never fails the caller's transaction.
                raise warning 'ErrorSendingBroadcastMessage: %', sqlerrm;
            end;
        end
        $f$;
    end if;
    if to_regprocedure('realtime.broadcast_changes(text, text, text, text, text, record,'
                       ' record, text)') is null then
        create function realtime.broadcast_changes(topic_name text, event_name text,
                                                   operation text, table_name text,
                                                   table_schema text, new record, old record,
                                                   level text default 'ROW') returns void
        language plpgsql
        as $f$
        begin
            if level = 'STATEMENT' then
                raise exception 'function can only be triggered for each row, not for each statement';
            end if;
            if operation not in ('INSERT', 'UPDATE', 'DELETE') then
                raise exception 'Unexpected operation type: %', operation;
            end if;
            perform realtime.send(
                jsonb_build_object('old_record', old, 'record', new, 'operation', operation,
                                   'table', table_name, 'schema', table_schema),
                event_name, topic_name);
        end
        $f$;
    end if;
    if to_regprocedure('realtime.topic()') is null then
        create function realtime.topic() returns text
        language sql stable
        as $f$ select nullif(current_setting('realtime.topic', true), '')::text $f$;
    end if;
    if exists (select from pg_roles where rolname = 'authenticated')
       and exists (select from pg_roles where rolname = 'anon')
       and exists (select from pg_roles where rolname = 'service_role') then
        begin
            grant usage on schema realtime to anon, authenticated, service_role;
            grant select, insert, update on realtime.messages to anon, authenticated, service_role;
            grant execute on function realtime.topic() to anon, authenticated, service_role;
        exception when insufficient_privilege then
            null;  -- someone else's realtime schema: its grants are its own
        end;
    end if;
end
$$;
