// The CPU bench's yardstick for tunnels: the least a Node process can do to relay a CONNECT tunnel.
// It answers any CONNECT with 200 and pipes both ways to the one upstream given on the command line,
// with no options, no byte counting, no logging. Prints {"port":N} once listening.
// Usage: node --import tsx bench/cpu/bare-relay.ts <upstream host> <upstream port>
import net from 'node:net';

const [host = '127.0.0.1', port = '443'] = process.argv.slice(2);

const server = net.createServer((client) => {
  client.on('error', () => client.destroy());
  // curl sends its CONNECT head in one write; whatever follows the head goes upstream.
  client.once('data', (head: Buffer) => {
    const end = head.indexOf('\r\n\r\n');
    const upstream = net.connect(Number(port), host, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (end >= 0 && end + 4 < head.length) upstream.write(head.subarray(end + 4));
      client.pipe(upstream).pipe(client);
    });
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
  });
});
server.listen(0, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ port: (server.address() as net.AddressInfo).port })}\n`));
