"""A one-slot ring in POSIX shared memory (/dev/shm): a length and a
message, written by one side and read by the other; the Unix socket beside
it says when a slot is full."""
import struct


class Ring:
    SIZE = 1 << 20

    def __init__(self, shm):
        self.shm = shm

    def put(self, data):
        if len(data) + 4 > self.SIZE:
            raise ValueError("message too large for the ring")
        self.shm.buf[:4] = struct.pack("<I", len(data))
        self.shm.buf[4:4 + len(data)] = data

    def get(self):
        (n,) = struct.unpack("<I", bytes(self.shm.buf[:4]))
        return bytes(self.shm.buf[4:4 + n])
