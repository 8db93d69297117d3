// A real OAuth 2.0 server for moat's login tests: npm's oauth2-mock-server (PKCE S256
// checked, refresh tokens issued) on 127.0.0.1 and a random port.
//
// Env: MOAT_OAUTH2_MOCK_SERVER (the package directory), LOGIN_TTL and REFRESH_TTL (the
// expires_in of tokens from a code and from a refresh, seconds).
// Prints `listening PORT`, then one `token GRANT_TYPE` line per token response.
import { pathToFileURL } from 'node:url';

const dir = process.env.MOAT_OAUTH2_MOCK_SERVER;
const { OAuth2Server } = await import(pathToFileURL(`${dir}/dist/index.mjs`).href);
const loginTtl = Number(process.env.LOGIN_TTL ?? 3600);
const refreshTtl = Number(process.env.REFRESH_TTL ?? 3600);

const server = new OAuth2Server();
await server.issuer.keys.generate('RS256');
server.service.on('beforeResponse', (response, req) => {
  const grant = req.body.grant_type;
  if (response.statusCode === 200) {
    response.body.expires_in = grant === 'refresh_token' ? refreshTtl : loginTtl;
  }
  console.log(`token ${grant} ${response.statusCode}`);
});
await server.start(0, '127.0.0.1');
console.log(`listening ${server.address().port}`);
