import { stackCommand } from './stack';

const USAGE = `usage: flowgate <command>
  stack up|down|status|logs|reset|env   the local stack (make up / down / status / logs / reset)`;

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'stack':
      return stackCommand(rest);
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
