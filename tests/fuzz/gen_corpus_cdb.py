#!/usr/bin/env python3
# Regenerate the seed corpus of fuzz_cdb (see the input layout atop
# fuzz_cdb.c): one valid-looking input per command we implement, plus a
# few error paths. Run from anywhere; writes corpus/cdb/.
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'corpus', 'cdb')
os.makedirs(OUT, exist_ok=True)
CLR = 0x02  # clear the power-on UA first


def seed(name, flags, cdb, buflen=0, data=b'', err=0):
    cdb = bytes(cdb)
    assert len(cdb) <= 16, name
    cdb += bytes(16 - len(cdb))
    with open(os.path.join(OUT, name), 'wb') as f:
        f.write(bytes([flags, err]) + struct.pack('>H', buflen) + cdb + data)


def rw10(op, b1, lba, n):
    return [op, b1] + list(struct.pack('>I', lba)) + [0] + list(struct.pack('>H', n)) + [0]


def rw16(op, b1, lba, n):
    return [op, b1] + list(struct.pack('>Q', lba)) + list(struct.pack('>I', n)) + [0, 0]


seed('tur', 0, [0] * 6)
seed('inquiry', 0, [0x12, 0, 0, 0, 96, 0], 96)
for p in (0x00, 0x80, 0x83, 0x8f, 0xb0, 0xb1, 0xb2):
    seed('vpd_%02x' % p, 0, [0x12, 1, p, 0, 255, 0], 255)
seed('inquiry_nolu', 1, [0x12, 0, 0, 0, 96, 0], 96)
seed('report_luns', 0, [0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0], 64)
seed('request_sense', 0, [0x03, 0, 0, 0, 18, 0], 18)
seed('read_capacity10', CLR, [0x25] + [0] * 9, 8)
seed('read_capacity16', CLR, [0x9e, 0x10] + [0] * 8 + [0, 0, 0, 32, 0, 0], 32)
seed('read6', CLR, [0x08, 0, 0, 1, 2, 0], 1024)
seed('write6', CLR, [0x0a, 0, 0, 1, 1, 0], 512, b'\xaa' * 512)
seed('read10', CLR, rw10(0x28, 0, 0, 4), 2048)
seed('read10_short_buf', CLR, rw10(0x28, 0, 0, 4), 700)
seed('write10_fua', CLR, rw10(0x2a, 0x08, 3, 2), 1024, bytes(range(256)) * 4)
seed('write10_4k', CLR | 0x04, rw10(0x2a, 0, 3, 1), 4096, b'\x55' * 4096)
seed('read12', CLR, [0xa8, 0, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0], 1024)
seed('write12', CLR, [0xaa, 0, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0], 1024, b'\x11' * 1024)
seed('read16', CLR, rw16(0x88, 0, 60, 4), 2048)
seed('write16', CLR, rw16(0x8a, 0x08, 62, 2), 1024, b'\x22' * 1024)
seed('read16_oor', CLR, rw16(0x88, 0, 63, 2), 1024)
seed('read_eio', CLR | 0x08, rw10(0x28, 0, 0, 1), 512, err=0)
seed('write_enospc', CLR | 0x08, rw10(0x2a, 0, 0, 1), 512, b'\x01' * 512, err=2 | (1 << 3))
seed('verify10', CLR, rw10(0x2f, 0, 0, 4))
seed('verify10_bytchk', CLR, rw10(0x2f, 0x02, 0, 2), 1024)
seed('verify16_bytchk3', CLR, rw16(0x8f, 0x06, 0, 8), 512)
seed('write_verify10', CLR, rw10(0x2e, 0x02, 10, 2), 1024, b'\x33' * 1024)
seed('write_verify16', CLR, rw16(0x8e, 0, 10, 2), 1024, b'\x34' * 1024)
seed('sync10', CLR, rw10(0x35, 0, 0, 0))
seed('sync16', CLR, rw16(0x91, 0x02, 0, 64))
seed('mode_sense6_all', CLR, [0x1a, 0, 0x3f, 0, 255, 0], 255)
seed('mode_sense10_llbaa', CLR, [0x5a, 0x10, 0x08, 0, 0, 0, 0, 0, 255, 0], 255)
seed('mode_sense6_changeable', CLR, [0x1a, 0x08, 0x7f, 0xff, 255, 0], 255)
cache = bytes([0, 0, 0, 0, 0x08, 0x12, 0x00]) + bytes(17)
seed('mode_select6_wce0', CLR, [0x15, 0x10, 0, 0, len(cache), 0], len(cache), cache)
cache10 = bytes(8) + bytes([0x08, 0x12, 0x04]) + bytes(17)
seed('mode_select10_wce1', CLR, [0x55, 0x10, 0, 0, 0, 0, 0, 0, len(cache10), 0],
     len(cache10), cache10)
bd = bytes([0, 0, 0, 8]) + struct.pack('>I', 64) + bytes([0]) + (512).to_bytes(3, 'big')
seed('mode_select6_bd', CLR, [0x15, 0x10, 0, 0, len(bd), 0], len(bd), bd)
seed('start_stop', CLR, [0x1b, 0, 0, 0, 0, 0])
seed('prefetch10', CLR, rw10(0x34, 0x02, 0, 8))
um = struct.pack('>HH4x', 6 + 32, 32) + struct.pack('>QI4x', 1, 4) + struct.pack('>QI4x', 20, 8)
seed('unmap', CLR, [0x42, 0, 0, 0, 0, 0, 0, 0, len(um), 0], len(um), um)
seed('write_same10', CLR, rw10(0x41, 0, 0, 16), 512, b'\x77' * 512)
seed('write_same16_unmap', CLR, rw16(0x93, 0x08, 0, 16), 512)
seed('write_same16_ndob', CLR, rw16(0x93, 0x09, 0, 16))
seed('get_lba_status', CLR, [0x9e, 0x12] + [0] * 7 + [3] + [0, 0, 0, 64, 0, 0], 64)
seed('rsoc_all', CLR, [0xa3, 0x0c, 0x80, 0, 0, 0, 0, 0, 0x10, 0, 0, 0], 4096)
seed('rsoc_one', CLR, [0xa3, 0x0c, 0x01, 0x28, 0, 0, 0, 0, 0, 64, 0, 0], 64)
seed('rsoc_sa', CLR, [0xa3, 0x0c, 0x02, 0x9e, 0, 0x10, 0, 0, 0, 64, 0, 0], 64)
seed('rstmf', CLR, [0xa3, 0x0d, 0x80, 0, 0, 0, 0, 0, 0, 16, 0, 0], 16)
caw = b'\x00' * 512 + b'\x5a' * 512
seed('compare_and_write', CLR, [0x89, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0], 1024, caw)
seed('compare_and_write_fua', CLR, [0x89, 0x08, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0], 1024,
     b'\x5a' * 1024)
seed('verify12', CLR, [0xaf, 0x02, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0], 512)
seed('write_verify12', CLR, [0xae, 0x02, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0], 512, b'\x66' * 512)
seed('lu_reset', 0x10 | CLR, [0] * 6)
seed('resize', 0x20, rw10(0x28, 0, 0, 1), 512, err=4)
seed('cdb6_short', 0x40 | CLR, rw16(0x88, 0, 0, 1), 512)
seed('rtpg', CLR, [0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0], 64)
seed('rtpg_ext', CLR, [0xa3, 0x2a, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0], 64)
seed('rcr_opparams', CLR, [0x84, 0x03] + [0] * 8 + [0, 0, 1, 0, 0, 0], 256)
seed('rcr_status', CLR, [0x84, 0x00, 1] + [0] * 7 + [0, 0, 0, 64, 0, 0], 64)
# EXTENDED COPY of one LUN onto itself: the CDB fuzzer's LU is always in
# the view, but its NAA is not known here, so this reaches the parser and
# the unreachable-target path; fuzz_xcopy covers the copy itself.
xc = (bytes([1, 0, 0, 32]) + bytes(4) + struct.pack('>II', 28, 0) +
      bytes([0xe4, 0, 0, 0, 1, 3, 0, 16]) + bytes(16) + bytes([0, 0, 2, 0]) +
      bytes([2, 0, 0, 24, 0, 0, 0, 0, 0, 0, 0, 8]) + struct.pack('>QQ', 0, 16))
seed('xcopy', CLR, [0x83, 0] + [0] * 8 + list(struct.pack('>I', len(xc))) + [0, 0], len(xc), xc)


# Reservations: PERSISTENT RESERVE IN/OUT, RESERVE/RELEASE(6).
def prout(sa, typ, plen):
    return [0x5f, sa, typ, 0, 0] + list(struct.pack('>I', plen)) + [0]


def prparam(rk, sark, b20=0):
    return struct.pack('>QQ4xBBxx', rk, sark, b20, 0)


for sa in range(4):
    seed('prin_%d' % sa, CLR, [0x5e, sa, 0, 0, 0, 0, 0, 0x01, 0x00, 0], 256)
seed('prin_bad_sa', CLR, [0x5e, 0x09, 0, 0, 0, 0, 0, 0, 64, 0], 64)
seed('prout_register', CLR, prout(0, 0, 24), 24, prparam(0, 0x1122))
seed('prout_register_ignore_alltgpt', CLR, prout(6, 0, 24), 24, prparam(9, 0x33, 0x04))
seed('prout_register_aptpl', CLR, prout(0, 0, 24), 24, prparam(0, 0x44, 0x01))
seed('prout_register_spec_i_pt', CLR, prout(0, 0, 52), 52,
     prparam(0, 0x44, 0x08) + struct.pack('>I', 24) + bytes([0x45, 0, 0, 20]) + b'iqn.x,i,0x1'.ljust(20, b'\0'))
seed('prout_reserve_wero', CLR, prout(1, 5, 24), 24, prparam(0x10, 0))
seed('prout_reserve_bad_type', CLR, prout(1, 2, 24), 24, prparam(0x10, 0))
seed('prout_release', CLR, prout(2, 1, 24), 24, prparam(0x10, 0))
seed('prout_clear', CLR, prout(3, 0, 24), 24, prparam(0x10, 0))
seed('prout_preempt', CLR, prout(4, 3, 24), 24, prparam(0x10, 2))
seed('prout_preempt_abort', CLR, prout(5, 8, 24), 24, prparam(0x10, 2))
seed('prout_short_list', CLR, prout(0, 0, 20), 20, prparam(0, 1)[:20])
name = b'iqn.2026-01.fuzz:k,i,0x3'
tpid = bytes([0x45, 0, 0, 28]) + name.ljust(28, b'\0')
seed('prout_move', CLR, prout(7, 0, 24 + len(tpid)), 24 + len(tpid),
     struct.pack('>QQxBHI', 0x10, 0x55, 0x02, 1, len(tpid)) + tpid)
seed('reserve6', CLR, [0x16, 0, 0, 0, 0, 0])
seed('release6', CLR, [0x17, 0, 0, 0, 0, 0])
seed('reserve10', 0x80 | CLR, [0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0])
