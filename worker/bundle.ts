import { writeFile } from 'node:fs/promises';
import { bundleWorkflows } from './main';

/**
 * Builds the workflow bundle ahead of time (the image does, so a worker starts without webpack):
 * `node dist/worker/bundle.js <file>`, then FLOWGATE_WORKFLOW_BUNDLE=<file> for the worker.
 */
async function main(out: string | undefined): Promise<void> {
  if (!out) throw new Error('usage: bundle <output file>');
  const { code } = await bundleWorkflows();
  await writeFile(out, code);
  process.stdout.write(`workflow bundle: ${out} (${Math.round(code.length / 1024)} KiB)\n`);
}

main(process.argv[2]).catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
