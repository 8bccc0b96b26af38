// tier: unit
// The address syntax under ALLOWED_CLIENTS, ALLOW_/DENY_DESTINATIONS and the ranges regcache never
// connects to: CIDR parsing, matching, the IPv4-mapped form and the numeric spellings of an IPv4 address
// that resolvers accept. Edge by edge, so that a loosened check fails here (the policy mutation group).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AddressRanges, numericIpv4, parseAddressRange, plainAddress } from '../src/reference/address-ranges.js';

describe('address ranges', () => {
  it('parses an address or a range, and nothing else', () => {
    assert.deepEqual(parseAddressRange('10.0.0.0/8'), { address: '10.0.0.0', prefix: 8, family: 'ipv4' });
    assert.deepEqual(parseAddressRange('192.0.2.7'), { address: '192.0.2.7', prefix: 32, family: 'ipv4' });
    assert.deepEqual(parseAddressRange('fd00::/8'), { address: 'fd00::', prefix: 8, family: 'ipv6' });
    assert.deepEqual(parseAddressRange('::1'), { address: '::1', prefix: 128, family: 'ipv6' });
    assert.deepEqual(parseAddressRange('0.0.0.0/0'), { address: '0.0.0.0', prefix: 0, family: 'ipv4' });
    for (const bad of ['10.0.0.0/8/9', '10.0.0.0/33', '::/129', '10.0.0.0/1e1', '10.0.0.0/+8', '10.0.0.0/8x', '10.0.0.0/', 'example.com', '10.0.0/8', ''])
      assert.equal(parseAddressRange(bad), null, bad);
  });

  it('matches addresses in its ranges, the IPv4-mapped form included, and never a name', () => {
    const r = AddressRanges.of('10.0.0.0/8', 'fd00::/8', '192.0.2.7');
    for (const yes of ['10.1.2.3', '::ffff:10.1.2.3', 'fd00::1', '192.0.2.7']) assert.equal(r.has(yes), true, yes);
    for (const no of ['11.0.0.1', '192.0.2.8', 'fe80::1', 'not-an-address', '']) assert.equal(r.has(no), false, no);
  });

  it('reads the IPv4 peer out of a dual-stack address, and leaves others alone', () => {
    assert.equal(plainAddress('::ffff:10.0.0.1'), '10.0.0.1');
    assert.equal(plainAddress('10.0.0.1'), '10.0.0.1');
    assert.equal(plainAddress('::ffff:abcd'), '::ffff:abcd');
    assert.equal(plainAddress('fe80::1'), 'fe80::1');
    assert.equal(plainAddress('2001:db8::ffff:'), '2001:db8::ffff:');
  });

  it('reads the numeric spellings of an IPv4 address as inet_aton does', () => {
    const cases: Array<[string, string | null]> = [
      ['1.2.3.4', '1.2.3.4'],
      ['2130706433', '127.0.0.1'],
      ['127.1', '127.0.0.1'],
      ['255.1', '255.0.0.1'],
      ['1.2.772', '1.2.3.4'],
      ['0x7f.0.0.1', '127.0.0.1'],
      ['0X7F.1', '127.0.0.1'],
      ['0177.0.0.1', '127.0.0.1'],
      ['255.255.255.255', '255.255.255.255'],
      ['1.2.3.4.5', null],
      ['256.1', null],
      ['1.2.3.256', null],
      ['1.16777216', null],
      ['1.2.65536', null],
      ['4294967296', null],
      ['127.x', null],
      ['x127.0.0.1', null],
      ['127.0.0.1x', null],
      ['08.0.0.1', null],
      ['example.com', null],
      ['123.example', null],
    ];
    for (const [name, want] of cases) assert.equal(numericIpv4(name), want, name);
  });
});
