// A Telegram Bot API server on 127.0.0.1:PORT (npm telegram-test-api, whose package
// directory is in MOAT_TELEGRAM_TEST_API), for the Telegram channel tests. Prints
// "ready" once it listens. Its client side (POST /sendMessage, /getUpdates) plays the
// people talking to the bot.
const TelegramServer = require(process.env.MOAT_TELEGRAM_TEST_API);

const port = Number(process.argv[2]);
const server = new TelegramServer({ port, host: '127.0.0.1', storeTimeout: 600 });
server.start().then(() => {
  console.log('ready');
}, (e) => {
  console.error(`cannot start: ${e}`);
  process.exit(1);
});
process.on('SIGTERM', () => process.exit(0));
