"""The Redis Cluster of `scripts/chaos --cluster`: six private nodes (3 masters, 3
replicas), a client that routes by slot, the cluster's health, and its faults.

Each node is a child process of the soak (restartable with the same command), on a free
port whose bus port (port + 10,000) is free too, with its own folder under the run
folder. `--cluster-node-timeout 2000` keeps a failover within a few seconds;
`--cluster-require-full-coverage no` lets the other masters serve while one shard has
no master (a master killed while its replica is paused). No persistence: a killed master
is started again only once its replica has taken over, and then it rejoins as a replica
and copies the new master's data, so nothing on its disk would be used.

Faults (docs/testing.md, "Chaos soak"), each on a shard (0, 1, 2: the master that owns
slot 0, 5461 or 10923 when the fault starts, and that master's replica):
- `master_kill`: SIGKILL of the master; once its replica is master, the killed node is
  started again after the fault's duration and rejoins as a replica;
- `replica_pause`: SIGSTOP of the replica for the duration, then SIGCONT;
- `master_kill_replica_paused`: SIGSTOP of the replica, SIGKILL of the master half the
  duration later (meanwhile the master takes writes no replica can hold), SIGCONT of the
  replica after the other half; it takes over, and the killed node rejoins as a replica.
The fault records when the replica was paused (`replica_paused_from`, `_until`, wall
clock): nothing written on that shard meanwhile can be held by a replica, so nothing
written then may be acknowledged (the checker's rule 8). A fault ends when the cluster is whole again: three masters covering the 16,384 slots,
each with a replica whose link is up, no node flagged failing.
"""

import os
import signal
import socket
import subprocess
import time

from free_port import free_port

SLOTS = 16384
SHARD_SLOTS = (0, 5461, 10923)
CLUSTER_FAULT_KINDS = ("master_kill", "replica_pause", "master_kill_replica_paused")


def crc16(data):
    """CRC16-CCITT (XMODEM), the one Redis Cluster hashes keys with."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(key):
    """The slot of a key, with its hash tag (`{...}`) when it has one."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1:end]
    return crc16(data) % SLOTS


def cluster_port():
    """A free port whose cluster bus port (port + 10,000) is free too."""
    while True:
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10_000))
                return port
            except OSError:
                continue


def parse_nodes(text):
    """`CLUSTER NODES` as a list of dicts: id, port, flags (a set), master (id or None),
    link, slots (a list of (first, last))."""
    nodes = []
    for line in text.strip().splitlines():
        fields = line.split()
        slots = []
        for part in fields[8:]:
            if part.startswith("["):
                continue  # a slot being migrated
            first, _, last = part.partition("-")
            slots.append((int(first), int(last or first)))
        nodes.append({"id": fields[0], "port": int(fields[1].split("@")[0].rsplit(":", 1)[1]),
                      "flags": set(fields[2].split(",")), "master": None if fields[3] == "-" else fields[3],
                      "link": fields[7], "slots": slots})
    return nodes


class Cluster:
    """Six nodes started by `start`, as Process objects of the run (`redis-0` … `redis-5`)."""

    def __init__(self, run, redis_class, process_class):
        self.run, self.redis_class, self.process_class = run, redis_class, process_class
        self.ports = [cluster_port() for _ in range(6)]
        self.names = [f"redis-{index}" for index in range(6)]
        self.slot_owner = {}

    @property
    def url(self):
        return ",".join(f"redis://127.0.0.1:{port}" for port in self.ports)

    def start(self):
        for name, port in zip(self.names, self.ports):
            folder = os.path.join(self.run.folder, name)
            os.makedirs(folder)
            process = self.process_class(name, [
                "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", folder,
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "2000", "--cluster-require-full-coverage", "no",
                "--appendonly", "no", "--save", "", "--repl-diskless-sync-delay", "0"], dict(os.environ),
                self.run.folder)
            process.start()
            self.run.processes[name] = process
        deadline = time.monotonic() + 30
        while not all(self.answers(port) for port in self.ports):
            if time.monotonic() > deadline:
                raise RuntimeError("a redis cluster node did not start")
            time.sleep(0.1)
        created = subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{port}" for port in self.ports),
                                  "--cluster-replicas", "1", "--cluster-yes"], capture_output=True, text=True)
        with open(os.path.join(self.run.folder, "cluster-create.log"), "w") as file:
            file.write(created.stdout + created.stderr)
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}{created.stderr}")

    def client(self, port, timeout=1):
        return self.redis_class(port, timeout=timeout)

    def command(self, port, *arguments, timeout=1):
        client = self.client(port, timeout)
        try:
            return client.command(*arguments)
        finally:
            client.close()

    def answers(self, port):
        try:
            return self.command(port, "PING") == "PONG"
        except (OSError, RuntimeError):
            return False

    def nodes(self):
        """The cluster's nodes as the first answering node sees them."""
        for port in self.ports:
            try:
                return parse_nodes(self.command(port, "CLUSTER", "NODES"))
            except (OSError, RuntimeError):
                continue
        raise ConnectionError("no cluster node answers")

    def name_of(self, port):
        return self.names[self.ports.index(port)]

    def whole(self):
        """Whether three masters serve every slot, each with a synced replica, every node
        answers, and none is flagged failing."""
        for port in self.ports:
            info = self.command(port, "INFO", "replication")
            if "role:slave" in info and "master_link_status:up" not in info:
                return False
            nodes = parse_nodes(self.command(port, "CLUSTER", "NODES"))
            if any(flags & {"fail", "fail?", "handshake", "noaddr"} for flags in (node["flags"] for node in nodes)):
                return False
            masters = [node for node in nodes if "master" in node["flags"] and node["slots"]]
            covered = sum(last - first + 1 for node in masters for first, last in node["slots"])
            if len(masters) != 3 or covered != SLOTS:
                return False
            if any(not any(other["master"] == master["id"] for other in nodes) for master in masters):
                return False
        return True

    def shard(self, index):
        """(master port, replica port) of the shard that owns SHARD_SLOTS[index] now."""
        nodes = self.nodes()
        slot = SHARD_SLOTS[index]
        master = next(node for node in nodes if "master" in node["flags"] and
                      any(first <= slot <= last for first, last in node["slots"]))
        replica = next(node for node in nodes if node["master"] == master["id"])
        return master["port"], replica["port"]

    def is_master(self, port):
        try:
            return "role:master" in self.command(port, "INFO", "replication")
        except (OSError, RuntimeError):
            return False

    def inject(self, fault, wait_until, log):
        """Plays one cluster fault; returns a description of the nodes it hit."""
        kind, duration = fault["kind"], fault["duration"]
        master, replica = self.shard(fault["shard"])
        master_process = self.run.processes[self.name_of(master)]
        replica_process = self.run.processes[self.name_of(replica)]
        hit = f"master {self.name_of(master)} (:{master}), replica {self.name_of(replica)} (:{replica})"
        log(f"{kind} on shard {fault['shard']}: {hit}")
        if kind == "replica_pause":
            replica_process.signal(signal.SIGSTOP)
            fault["replica_paused_from"] = time.time()
            time.sleep(duration)
            fault["replica_paused_until"] = time.time()
            replica_process.signal(signal.SIGCONT)
            return hit
        if kind == "master_kill_replica_paused":
            replica_process.signal(signal.SIGSTOP)
            fault["replica_paused_from"] = time.time()
            time.sleep(duration / 2)  # the master goes on taking writes its replica cannot hold
        master_process.signal(signal.SIGKILL)
        master_process.popen.wait()
        if kind == "master_kill_replica_paused":
            time.sleep(duration / 2)  # the shard has no master
            fault["replica_paused_until"] = time.time()
            replica_process.signal(signal.SIGCONT)
        if not wait_until(lambda: self.is_master(replica), 60):
            # The replica did not win an election (it should within a few node timeouts):
            # make it take over, so the soak goes on, and say so.
            log(f"{self.name_of(replica)} did not take over within 60 s; CLUSTER FAILOVER TAKEOVER")
            self.command(replica, "CLUSTER", "FAILOVER", "TAKEOVER", timeout=5)
            wait_until(lambda: self.is_master(replica), 30)
        if kind == "master_kill":
            time.sleep(duration)
        master_process.start()
        return hit

    def heal(self):
        for name in self.names:
            self.run.processes[name].signal(signal.SIGCONT)

    def close(self):
        """Nothing to close: each read opens and closes its own connections."""

    def scan(self, pattern):
        """Every key matching `pattern` on the masters."""
        keys = []
        for node in self.nodes():
            if "master" in node["flags"] and node["slots"]:
                client = self.client(node["port"], timeout=30)
                try:
                    keys += client.scan(pattern)
                finally:
                    client.close()
        return keys

    def pipeline(self, commands):
        """Runs commands (each naming its key first) on the masters of their slots, one
        pipeline per master, and answers the replies in order. A MOVED reply (a failover in
        between) refreshes the slot map and runs the commands again."""
        for _ in range(5):
            self.refresh_slots()
            by_port = {}
            for index, command in enumerate(commands):
                port = self.slot_owner[key_slot(command[1])]
                by_port.setdefault(port, []).append(index)
            replies = [None] * len(commands)
            try:
                for port, indices in by_port.items():
                    client = self.client(port, timeout=30)
                    try:
                        for index, reply in zip(indices, client.pipeline([commands[i] for i in indices],
                                                                         raise_errors=False)):
                            if isinstance(reply, RuntimeError):
                                raise reply
                            replies[index] = reply
                    finally:
                        client.close()
                return replies
            except (RuntimeError, OSError) as error:
                last = error
                time.sleep(0.5)
        raise RuntimeError(f"cluster pipeline failed: {last}")

    def refresh_slots(self):
        self.slot_owner = {}
        for node in self.nodes():
            if "master" in node["flags"] and not node["flags"] & {"fail", "fail?"}:
                for first, last in node["slots"]:
                    for slot in range(first, last + 1):
                        self.slot_owner[slot] = node["port"]
