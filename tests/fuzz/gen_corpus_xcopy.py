#!/usr/bin/env python3
# Regenerate the seed corpus of fuzz_xcopy (see the input layout atop
# fuzz_xcopy.c): EXTENDED COPY parameter lists as VMware sends them, plus
# the error paths. A CSCD whose designator starts with byte N < 10h is
# filled in by the harness with the NAA of LU N % 3 (2: outside the view).
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'corpus', 'xcopy')
os.makedirs(OUT, exist_ok=True)


def cscd(lu, bs, typ=0xE4, b1=0):
    d = bytearray(32)
    d[0] = typ
    d[1] = b1
    d[4] = 0x01
    d[5] = 0x03
    d[7] = 16
    d[8] = lu
    d[29:32] = struct.pack('>I', bs)[1:]
    return bytes(d)


def seg(src, dst, n, slba, dlba, typ=0x02, dc=0):
    return (bytes([typ, dc << 1]) + struct.pack('>HHH', 24, src, dst) + b'\0\0' +
            struct.pack('>HQQ', n, slba, dlba))


def plist(cscds, segs, list_id=1, usage=0, inline=0):
    t = b''.join(cscds)
    s = b''.join(segs)
    return (bytes([list_id, usage << 3]) + struct.pack('>H', len(t)) + b'\0' * 4 +
            struct.pack('>II', len(s), inline) + t + s)


def seed(name, p, flags=0, f1=0, list_id=1):
    with open(os.path.join(OUT, name), 'wb') as f:
        f.write(bytes([flags, f1, list_id]) + p)


A = cscd(0, 512)
B = cscd(1, 4096)
H = cscd(2, 512)
seed('within_lu0', plist([A], [seg(0, 0, 8, 0, 100)]))
seed('lu0_to_lu1', plist([A, B], [seg(0, 1, 16, 0, 8)]))
seed('lu1_to_lu0_dc', plist([A, B], [seg(1, 0, 16, 0, 8, dc=1)]))
seed('overlap_up', plist([A], [seg(0, 0, 4096, 0, 1000)]))
seed('overlap_down', plist([A], [seg(0, 0, 4096, 2000, 100)]))
seed('two_segments', plist([A, B], [seg(0, 1, 8, 0, 0), seg(1, 0, 1, 0, 64)]))
seed('hidden_dst', plist([A, H], [seg(0, 1, 8, 0, 0)]))
seed('hidden_src', plist([A, H], [seg(1, 0, 8, 0, 0)]))
seed('bad_index', plist([A], [seg(0, 3, 8, 0, 0)]))
seed('beyond_eol', plist([A], [seg(0, 0, 16, 0, 8190)]))
seed('inexact', plist([A, B], [seg(0, 1, 3, 0, 0)]))
seed('bs_mismatch', plist([cscd(0, 4096)], [seg(0, 0, 1, 0, 1)]))
seed('cscd_fc', plist([cscd(0, 512, typ=0xE0)], [seg(0, 0, 1, 0, 1)]))
seed('seg_stream', plist([A], [seg(0, 0, 1, 0, 1, typ=0x03)]))
seed('too_many_cscd', plist([A] * 9, [seg(0, 0, 1, 0, 1)]))
seed('too_many_seg', plist([A], [seg(0, 0, 1, 0, 1)] * 17))
seed('truncated', plist([A], [seg(0, 0, 1, 0, 1)])[:-1])
seed('header_only', plist([], []))
seed('usage_11', plist([A], [seg(0, 0, 1, 0, 1)], list_id=0, usage=3))
seed('usage_01', plist([A], [seg(0, 0, 1, 0, 1)], usage=1))
seed('inline', plist([A], [seg(0, 0, 1, 0, 1)], inline=4) + b'\0' * 4)
seed('ro_dst', plist([A, B], [seg(0, 1, 8, 0, 0)]), flags=0x40)
seed('standby_dst', plist([A, B], [seg(0, 1, 8, 0, 0)]), flags=2 << 3)
seed('read_error', plist([A], [seg(0, 0, 8, 0, 100)]), flags=0x04, f1=0x08)
seed('write_enospc', plist([A, B], [seg(0, 1, 8, 0, 0)]), flags=0x04, f1=0x22)
seed('cancelled', plist([A], [seg(0, 0, 4096, 0, 4096)]), f1=0x10)
seed('rcr_status', plist([A], [seg(0, 0, 8, 0, 100)], list_id=9), flags=0x80, list_id=9)
seed('rcr_failed', plist([A], [seg(0, 0, 16, 0, 8190)], list_id=9), flags=0x80, f1=0x40,
     list_id=9)
seed('rcr_opparams', plist([], []), flags=0x80, f1=0x20)
seed('sent_to_lu1', plist([A, B], [seg(0, 1, 16, 0, 8)]), flags=0x01)
