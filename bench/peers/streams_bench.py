"""The streams benchmark's driver (run by scripts/bench/streams.sh): one topic, every contender.

Fills one fresh topic with N listings in the project's contract (Avro in Confluent's wire format
through the registry, 3 partitions, every product id distinct, about 59 % priced at or under
1,000,000 KRW, 3 % without a price), computes the exact expected sum, then runs each contender
over that same topic, one after the other, each as a process of its own and each with its own
consumer group and output topics, once the machine has settled after what ran before (dirty
pages written out, CPU below 10 % busy):

  raw          bench/peers/raw: a plain consume→produce loop of the same bytes (rust-rdkafka,
               marketflow's client settings); it exits after copying N records. It runs first and
               last, and the contenders are compared with the mean of the two passes.
  changelog    marketflow `streams`, guarantee `changelog`
  exactly_once marketflow `streams`, guarantee `exactly_once`
  bytewax      bench/peers/bytewax/filtered_sum.py, the original demo's job on bytewax 0.21.1
  ks_alos      bench/peers/kafka-streams, processing.guarantee=at_least_once
  ks_eos       bench/peers/kafka-streams, processing.guarantee=exactly_once_v2

Each is timed from its process's start until its output shows the exact final global sum (read
`read_committed`), or, for the raw loop, until it exits having copied N records. CPU-s is the
user+sys time of its process tree at that moment (/proc/PID/stat, children included), max RSS the
peak resident set of the process (/proc/PID/status VmHWM, read every 50 ms and at that moment), steal
the share of the machine's CPU time its host took meanwhile (/proc/stat). A contender whose sum
never gets exact within the timeout is reported with the last sum it showed. The run's topics, consumer
groups and registry subjects are deleted at the end (--keep-topics keeps them).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import fastavro
import requests
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "core" / "schemas"
PARTITIONS = 3
MAX_PRICE = 1_000_000
CONTENDERS = ["raw", "changelog", "exactly_once", "bytewax", "ks_alos", "ks_eos"]
LABELS = {
    "raw": "raw consume→produce",
    "changelog": "marketflow streams (changelog)",
    "exactly_once": "marketflow streams (exactly_once)",
    "bytewax": "bytewax 0.21.1 filtered_sum",
    "ks_alos": "Kafka Streams 4.1.0 at_least_once",
    "ks_eos": "Kafka Streams 4.1.0 exactly_once_v2",
    "baseline": "marketflow streams (baseline)",
}
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --- the listings ---------------------------------------------------------------------------

CATEGORIES = ["디지털기기", "가구/인테리어", "의류", "도서", "스포츠/레저", "생활가전", "유아동"]


SEED = 20261202


def listing(i: int, rng: random.Random) -> dict:
    """Listing i: a distinct product id; 3 % without a price, 38 % over the limit, 59 % at or under."""
    bucket = rng.random()
    if bucket < 0.03:
        price = None
    elif bucket < 0.41:
        price = int(MAX_PRICE * (1.01 + 4.0 * rng.random()))
    elif bucket < 0.415:
        price = MAX_PRICE
    else:
        price = rng.randrange(1_000, MAX_PRICE, 100)
    category = CATEGORIES[i % len(CATEGORIES)]
    product_id = 100_000_000 + i
    return {
        "product_id": product_id,
        "title": f"아이폰 15 Pro {i} 급처 팝니다",
        "price": price,
        "condition": "used",
        "sale_status": "on_sale",
        "category_path": f"{category} > 기타",
        "category_level1": category,
        "category_level2": "기타",
        "category_level3": None,
        "category_level4": None,
        "description": "직거래 선호, 네고 가능합니다. 상태 좋아요. 박스 포함, 충전기 없음.",
        "seller": f"{rng.getrandbits(256):064x}",
        "location": "서울 강남구",
        "view_count": rng.randrange(500),
        "wish_count": rng.randrange(20),
        "chat_count": rng.randrange(5),
        "image_urls": [f"https://img.joongna.com/{product_id}/1.jpg"],
        "posted_at": 1_700_000_000_000,
        "scraped_at": 1_700_000_000_000 + i,
        "source_url": f"https://web.joongna.com/product/{product_id}",
    }


def register(registry: str, subject: str, schema_file: str) -> tuple[int, dict]:
    text = (SCHEMAS / schema_file).read_text()
    response = requests.post(
        f"{registry}/subjects/{subject}/versions",
        json={"schema": text},
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        timeout=10,
    )
    if response.status_code != 200:
        raise SystemExit(f"registering {subject} at {registry} failed: {response.status_code} {response.text}")
    return response.json()["id"], fastavro.parse_schema(json.loads(text))


def framed(schema_id: int, schema: dict, record: dict) -> bytes:
    out = io.BytesIO()
    out.write(b"\0" + schema_id.to_bytes(4, "big"))
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


def fill(bootstrap: str, registry: str, topic: str, n: int) -> tuple[int, int]:
    """Produces N listings to `topic`; returns the expected count and sum of accepted prices."""
    key_id, key_schema = register(registry, f"{topic}-key", "listing-key.avsc")
    value_id, value_schema = register(registry, f"{topic}-value", "listing.avsc")
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "batch.size": 1_000_000,
        }
    )
    failed: list[str] = []

    def delivered(error, _message):
        if error is not None:
            failed.append(str(error))

    rng = random.Random(SEED)
    count = total = 0
    for i in range(n):
        record = listing(i, rng)
        price = record["price"]
        if price is not None and price <= MAX_PRICE:
            count += 1
            total += price
        key = framed(key_id, key_schema, {"product_id": record["product_id"]})
        value = framed(value_id, value_schema, record)
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        if i and i % 100_000 == 0:
            log(f"filled {i}")
    if producer.flush(120) != 0 or failed:
        raise SystemExit(f"filling {topic} failed: {failed[:3]}")
    return count, total


def expected(n: int) -> tuple[int, int]:
    """The expected count and sum of accepted prices of the N listings `fill` produces (the
    listings are the same in every run: one seed)."""
    rng = random.Random(SEED)
    count = total = 0
    for i in range(n):
        price = listing(i, rng)["price"]
        if price is not None and price <= MAX_PRICE:
            count += 1
            total += price
    return count, total


# --- watching an output ---------------------------------------------------------------------


class Watch(threading.Thread):
    """Reads a topic from the beginning (read_committed) until `verdict(key, value)` says done."""

    def __init__(self, bootstrap: str, topic: str, decode):
        super().__init__(daemon=True)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-watch-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        self.decode = decode  # (key, value) -> (exact: bool or None, what to show)
        self.done = threading.Event()
        self.done_at: float | None = None
        self.on_done = None
        self.last = None
        self.stopping = False

    def run(self):
        while not self.stopping and not self.done.is_set():
            messages = self.consumer.consume(1000, 0.05)
            for message in messages:
                if message.error():
                    continue
                try:
                    exact, shown = self.decode(message.key(), message.value())
                except Exception as error:  # a record the contender wrote wrong: shown, not fatal
                    exact, shown = None, f"undecodable output record: {error!r}"
                if shown is not None:
                    self.last = shown
                if exact:
                    self.done_at = time.monotonic()
                    if self.on_done:
                        self.on_done()
                    self.done.set()
                    break
        self.consumer.close()


# --- processes and their costs --------------------------------------------------------------


def tree_cpu(pid: int) -> float:
    """User+sys seconds of `pid` and its live descendants (waited-for children included)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            # After ")": state ppid ... utime(11) stime(12) cutime(13) cstime(14), 0-based.
            f = stats[p]
            total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        todo.extend(children.get(p, []))
    return total / CLOCK_TICK


def peak_rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_ticks() -> list[int]:
    """The machine's CPU time so far, by kind (/proc/stat: user, nice, system, idle, iowait,
    irq, softirq, steal, ...)."""
    with open("/proc/stat") as f:
        return [int(v) for v in f.readline().split()[1:]]


def machine_busy(interval: float) -> float:
    """The fraction of the machine's CPU time spent busy (not idle or waiting on I/O) over
    `interval` seconds."""
    before = cpu_ticks()
    time.sleep(interval)
    delta = [b - a for a, b in zip(before, cpu_ticks())]
    return (sum(delta) - delta[3] - delta[4]) / max(1, sum(delta))


def stolen(before: list[int], after: list[int]) -> float:
    """The fraction of the machine's CPU time its host took (steal) between two readings of
    `cpu_ticks`: on a virtual machine, what makes one run slower than the next."""
    delta = [b - a for a, b in zip(before, after)]
    return delta[7] / max(1, sum(delta)) if len(delta) > 7 else 0.0


def settle(limit: float = 60.0) -> float:
    """Waits until what ran before has finished its after-effects, so that every contender
    starts on the same quiet machine: the page cache's dirty pages written out (a run that
    produced a million records leaves a gigabyte of them, written back while the next one
    runs), and the brokers idle (below 10 % of the machine over a second; at most `limit`
    seconds). Returns the seconds waited."""
    started = time.monotonic()
    os.sync()
    while time.monotonic() - started < limit and machine_busy(1.0) > 0.10:
        pass
    return time.monotonic() - started


@dataclass
class Result:
    name: str
    wall: float | None = None
    cpu: float | None = None
    rss_kib: int = 0
    steal: float = 0.0
    exact: bool = False
    shown: str = ""
    notes: list[str] = field(default_factory=list)


def measure(name: str, command: list[str], env: dict, log_path: Path, watch: Watch | None,
            timeout: float) -> Result:
    """Runs `command` until `watch` is done (or, without one, until it exits); its costs."""
    result = Result(name)
    sampled: dict = {}
    with open(log_path, "wb") as out:
        ticks = cpu_ticks()
        started = time.monotonic()
        process = subprocess.Popen(command, env={**os.environ, **env}, stdout=out, stderr=out,
                                   stdin=subprocess.DEVNULL)
        if watch is not None:
            # Sampled at once, before anything else runs, when the exact sum is seen.
            watch.on_done = lambda: sampled.update(cpu=tree_cpu(process.pid),
                                                   rss=peak_rss_kib(process.pid))
            watch.start()
        deadline = started + timeout
        exited, status, rusage = False, None, None
        # Peak RSS from /proc, polled: wait4's ru_maxrss would also count the driver's own
        # memory, which the child held between fork and exec.
        hwm = 0
        while time.monotonic() < deadline:
            hwm = max(hwm, peak_rss_kib(process.pid))
            if watch is not None and watch.done.wait(0.05):
                break
            waited, status, rusage = os.wait4(process.pid, os.WNOHANG)
            if waited:
                exited = True
                break
            if watch is None:
                time.sleep(0.01)
        finished = time.monotonic()
        result.steal = stolen(ticks, cpu_ticks())
        if not exited:
            # Still running: the exact sum was seen, or time ran out.
            if watch is None or not watch.done.is_set():
                sampled.update(cpu=tree_cpu(process.pid), rss=peak_rss_kib(process.pid))
            process.send_signal(signal.SIGTERM)
            for _ in range(200):
                waited, status, rusage = os.wait4(process.pid, os.WNOHANG)
                if waited:
                    break
                time.sleep(0.05)
            else:
                process.kill()
                _, status, rusage = os.wait4(process.pid, 0)
        process.returncode = status  # keeps Popen from waiting on a reaped child
    if watch is not None:
        watch.stopping = True
        watch.join(5)
        result.exact = watch.done.is_set()
        result.shown = str(watch.last)
        if result.exact:
            result.wall = watch.done_at - started
        elif exited:
            result.notes.append(f"exited with status {status} before its sum was exact; last "
                                f"seen {watch.last}; see {log_path}")
        else:
            result.notes.append(f"no exact sum within {timeout:.0f} s; last seen {watch.last}")
    else:
        result.exact = exited and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        result.wall = finished - started if result.exact else None
        if not result.exact:
            result.notes.append(f"exited with status {status}; see {log_path}")
    result.cpu = sampled.get("cpu", rusage.ru_utime + rusage.ru_stime if rusage else None)
    result.rss_kib = max(sampled.get("rss", 0), hwm)
    return result


# --- the contenders -------------------------------------------------------------------------


def registry_decoder(registry: str):
    """Decodes Confluent-framed Avro with writer schemas fetched from the registry, cached by id."""
    schemas: dict[int, dict] = {}

    def decode(data: bytes):
        if data is None or len(data) < 5 or data[0] != 0:
            return None
        schema_id = int.from_bytes(data[1:5], "big")
        if schema_id not in schemas:
            answer = requests.get(f"{registry}/schemas/ids/{schema_id}", timeout=10)
            answer.raise_for_status()
            schemas[schema_id] = fastavro.parse_schema(json.loads(answer.json()["schema"]))
        return fastavro.schemaless_reader(io.BytesIO(data[5:]), schemas[schema_id])

    return decode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listings", type=int, default=1_000_000)
    parser.add_argument("--only", default=",".join(CONTENDERS),
                        help="comma-separated contenders, of: " + ", ".join(CONTENDERS))
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds each contender may take (default 120 + N/2000)")
    parser.add_argument("--keep-topics", action="store_true")
    parser.add_argument("--source", default=None,
                        help="run over this topic, filled and kept (--keep-topics) by an earlier "
                             "run with the same --listings, instead of filling a new one")
    parser.add_argument("--streams-bin", default=str(ROOT / "target/release/streams"))
    parser.add_argument("--raw-bin", default=str(ROOT / "target/release/raw-copy"))
    parser.add_argument("--baseline-bin", default=None,
                        help="another build of streams (e.g. before a change), run under "
                             "changelog right after --streams-bin's changelog run")
    parser.add_argument("--kstreams-classpath", default="")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--logs", default=str(Path.home() / ".cache/marketflow/peers/logs"))
    args = parser.parse_args()
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in only if c not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contenders {unknown}; choose from {CONTENDERS}")
    n = args.listings
    timeout = args.timeout or 120 + n / 2000

    # The local cluster, unless marketflow's own settings in the environment say otherwise.
    bootstrap = os.environ.get("MARKETFLOW__KAFKA__BOOTSTRAP_SERVERS",
                               "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094")
    registry = os.environ.get("MARKETFLOW__REGISTRY__URL", "http://127.0.0.1:18081").rstrip("/")
    run = f"bench-streams-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:6]}"
    logs = Path(args.logs) / run
    logs.mkdir(parents=True, exist_ok=True)
    admin = AdminClient({"bootstrap.servers": bootstrap})

    def create(*topics: str) -> None:
        futures = admin.create_topics([NewTopic(t, PARTITIONS) for t in topics])
        for topic, future in futures.items():
            try:
                future.result()
            except KafkaException as e:
                raise SystemExit(f"creating topic {topic} on {bootstrap} failed: {e}: run scripts/cluster.sh up")

    if args.source:
        # A topic an earlier run filled and kept: the same N listings, so the same sums.
        source = args.source
        meta = admin.list_topics(source, timeout=10).topics.get(source)
        if meta is None or meta.error is not None:
            raise SystemExit(f"--source {source}: no such topic on {bootstrap}")
        watermarks = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{run}-check"})
        held = sum(watermarks.get_watermark_offsets(TopicPartition(source, p), timeout=10)[1]
                   for p in meta.partitions)
        watermarks.close()
        if held != n:
            raise SystemExit(f"--source {source} holds {held} records, not {n}: pass --listings {held}"
                             " if a run with that many filled it")
        expected_count, expected_sum = expected(n)
        log(f"reusing {source}: {expected_count} accepted, sum {expected_sum}")
    else:
        source = f"{run}-listings"
        create(source)
        log(f"filling {source} with {n} listings")
        t0 = time.monotonic()
        expected_count, expected_sum = fill(bootstrap, registry, source, n)
        log(f"filled in {time.monotonic() - t0:.1f} s: {expected_count} accepted, sum {expected_sum}")

    decode = registry_decoder(registry)

    def marketflow_sum(key, value):
        k = decode(key)
        if not k or k["scope"] != "all":
            return None, None
        v = decode(value)
        shown = (v["count"], v["sum"])
        return shown == (expected_count, expected_sum), shown

    def bytewax_sum(_key, value):
        shown = int(decode(value)["accum_price"])
        return shown == expected_sum, shown

    def kstreams_sum(key, value):
        if key != b"all" or value is None:
            return None, None
        v = json.loads(value)
        shown = (v["count"], v["sum"])
        return shown == (expected_count, expected_sum), shown

    def contender(name: str, tag: str) -> Result:
        prefix = f"{run}-{tag}"
        waited = settle()
        log(f"{LABELS[name]} ({prefix}), after {waited:.1f} s for the machine to settle")
        log_path = logs / f"{tag}.log"
        if name == "raw":
            create(f"{prefix}-copy")
            command = [args.raw_bin, bootstrap, source, f"{prefix}-copy", str(n), prefix]
            return measure(name, command, {}, log_path, None, timeout)
        if name in ("changelog", "exactly_once", "baseline"):
            create(f"{prefix}-affordable", f"{prefix}-sums")
            env = {
                "MARKETFLOW__TOPICS__LISTINGS": source,
                "MARKETFLOW__TOPICS__LISTINGS_AFFORDABLE": f"{prefix}-affordable",
                "MARKETFLOW__TOPICS__LISTING_SUMS": f"{prefix}-sums",
                "MARKETFLOW__STREAMS__GROUP_ID": prefix,
                "MARKETFLOW__STREAMS__CHANGELOG_TOPIC": f"{prefix}-changelog",
                "MARKETFLOW__STREAMS__PARTIALS_TOPIC": f"{prefix}-partials",
                "MARKETFLOW__STREAMS__GUARANTEE": "changelog" if name == "baseline" else name,
                "MARKETFLOW__STREAMS__MAX_PRICE": str(MAX_PRICE),
                "MARKETFLOW__STREAMS__ADMIN_ADDR": "127.0.0.1:0",
                "MARKETFLOW__KAFKA__BOOTSTRAP_SERVERS": bootstrap,
                "MARKETFLOW__REGISTRY__URL": registry,
                "RUST_LOG": os.environ.get("RUST_LOG", "warn"),
            }
            watch = Watch(bootstrap, f"{prefix}-sums", marketflow_sum)
            binary = args.baseline_bin if name == "baseline" else args.streams_bin
            return measure(name, [binary], env, log_path, watch, timeout)
        if name == "bytewax":
            create(f"{prefix}-sum")
            env = {"BOOTSTRAP": bootstrap, "REGISTRY_URL": registry, "INPUT": source,
                   "OUTPUT": f"{prefix}-sum", "GROUP_ID": prefix, "MAX_PRICE": str(MAX_PRICE)}
            command = [args.python, str(ROOT / "bench/peers/bytewax/filtered_sum.py")]
            watch = Watch(bootstrap, f"{prefix}-sum", bytewax_sum)
            return measure(name, command, env, log_path, watch, timeout)
        guarantee = "at_least_once" if name == "ks_alos" else "exactly_once_v2"
        create(f"{prefix}-sums")
        state = Path.home() / ".cache/marketflow/peers/kafka-streams/state"
        env = {"BOOTSTRAP": bootstrap, "REGISTRY_URL": registry, "INPUT": source,
               "OUTPUT": f"{prefix}-sums", "APPLICATION_ID": prefix, "GUARANTEE": guarantee,
               "STATE_DIR": str(state), "MAX_PRICE": str(MAX_PRICE)}
        java_opts = os.environ.get("KSTREAMS_JAVA_OPTS", "").split()
        command = ["java", *java_opts, "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                   "-cp", args.kstreams_classpath, "io.marketflow.peers.FilteredSum"]
        watch = Watch(bootstrap, f"{prefix}-sums", kstreams_sum)
        try:
            return measure(name, command, env, log_path, watch, timeout)
        finally:
            shutil.rmtree(state / prefix, ignore_errors=True)

    results: list[tuple[str, Result]] = []
    try:
        plan = [(c, c) for c in only]
        if args.baseline_bin:
            after = plan.index(("changelog", "changelog")) + 1 if "changelog" in only else 0
            plan.insert(after, ("baseline", "baseline"))
        if "raw" in only:
            plan.remove(("raw", "raw"))
            plan = [("raw", "raw-before"), *plan, ("raw", "raw-after")]
        for name, tag in plan:
            result = contender(name, tag)
            for note in result.notes:
                log(f"{tag}: {note}")
            results.append((tag, result))
    finally:
        if not args.keep_topics:
            topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(run)]
            for future in admin.delete_topics(topics).values():
                try:
                    future.result()
                except KafkaException:
                    pass
            groups = [g.group_id for g in admin.list_consumer_groups().result().valid
                      if g.group_id.startswith(run)]
            for future in (admin.delete_consumer_groups(groups).values() if groups else []):
                try:
                    future.result()
                except KafkaException:
                    pass
            subjects = [s for s in requests.get(f"{registry}/subjects", timeout=10).json()
                        if s.startswith(run)]
            for subject in subjects:
                for permanent in ("false", "true"):
                    requests.delete(f"{registry}/subjects/{subject}",
                                    params={"permanent": permanent}, timeout=10)
            log(f"deleted the {len(topics)} topics, {len(groups)} consumer groups and "
                f"{len(subjects)} registry subjects of {run}")

    report(results, n, expected_count, expected_sum, source, logs)
    return 0 if all(r.exact for _, r in results) else 1


def report(results, n, expected_count, expected_sum, source, logs) -> None:
    raws = [r.wall for tag, r in results if tag.startswith("raw") and r.wall]
    raw_rate = sum(n / w for w in raws) / len(raws) if raws else None
    print(f"listings {n} in {source}: {expected_count} at or under {MAX_PRICE:,} KRW, "
          f"exact sum {expected_sum:,}; load average {os.getloadavg()[0]:.2f}; logs in {logs}")
    header = f"{'':38} {'wall':>9} {'listings/s':>11} {'CPU-s':>8} {'max RSS':>9} {'exact':>6} {'× raw':>6} {'steal':>6}"
    print(header)
    for tag, r in results:
        label = LABELS[r.name] + (f" ({tag.split('-')[1]})" if tag.startswith("raw-") else "")
        wall = f"{r.wall:.2f} s" if r.wall else "—"
        rate = n / r.wall if r.wall else None
        ratio = f"{rate / raw_rate:.2f}" if rate and raw_rate else "—"
        cpu = f"{r.cpu:.1f}" if r.cpu is not None else "—"
        print(f"{label:38} {wall:>9} {(f'{rate:,.0f}' if rate else '—'):>11} {cpu:>8} "
              f"{r.rss_kib / 1024:>6.0f} MiB {('yes' if r.exact else 'NO'):>6} {ratio:>6} {r.steal:>6.0%}")
    if raw_rate:
        print(f"raw rate: mean of {len(raws)} passes, {raw_rate:,.0f} listings/s "
              f"({', '.join(f'{n / w:,.0f}' for w in raws)}); exact for the raw loop: it copied all {n}")
    for tag, r in results:
        if not r.exact:
            print(f"{tag}: {'; '.join(r.notes)}")


if __name__ == "__main__":
    sys.exit(main())
