import { loadConfig } from '../lib/config';
import { provisionPlatform } from '../lib/provision';
import { CONFIG_USAGE, configCommand } from './config';
import { stackCommand } from './stack';

const USAGE = `usage: flowgate <command>
  stack up|down|status|logs|reset|env   the local stack (make up / down / status / logs / reset)
  provision                             migrations, streams, topics, KV mount, search attributes (FLOWGATE_* env)
${CONFIG_USAGE}`;

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'stack':
      return stackCommand(rest);
    case 'config':
      return configCommand(rest);
    case 'provision':
      await provisionPlatform(loadConfig('admin'), (m) => console.log(m));
      return 0;
    default:
      console.error(USAGE);
      return cmd ? 2 : 0;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err instanceof Error ? err.stack ?? err.message : err);
    process.exit(1);
  },
);
