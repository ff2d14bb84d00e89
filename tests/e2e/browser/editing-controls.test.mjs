// editing-controls.test.mjs -- while a card's title editor is open, the
// person editing it cannot delete or move that card from under the editor:
// its Delete and move buttons are disabled (as for everybody else, who see it
// locked), and enabled again once the editor closes.
import assert from 'node:assert/strict';
import test from 'node:test';
import { addCard, cardById, launchBrowser, moveCard, openBoard, startDemoServer } from './helpers.mjs';

const CONTROLS = ['card-left', 'card-right', 'card-delete', 'card-edit'];

async function disabled(c) {
  const out = {};
  for (const k of CONTROLS) out[k] = await c.locator(`[data-testid="${k}"]`).isDisabled();
  return out;
}

test("the card whose title is being edited cannot be deleted or moved by its editor", { timeout: 30000 }, async (t) => {
  const srv = await startDemoServer(t);
  const browser = await launchBrowser(t);
  const { page: a } = await openBoard(browser, srv, { user: 'alice' });

  const id = await addCard(a, 'todo', 'Middle');
  await moveCard(a, 'Middle', 'right'); // in "doing": both arrows apply
  const c = cardById(a, id);
  await a.locator(`[data-testid="column"][data-col="doing"] [data-testid="card"][data-id="${id}"]`).waitFor();
  assert.deepEqual(await disabled(c), { 'card-left': false, 'card-right': false, 'card-delete': false, 'card-edit': false });

  // Editing (through the Edit button, then by clicking the title).
  for (const open of ['card-edit', 'card-title']) {
    await c.locator(`[data-testid="${open}"]`).click();
    await c.locator('[data-testid="title-input"]').waitFor({ state: 'visible' });
    assert.deepEqual(await disabled(c), { 'card-left': true, 'card-right': true, 'card-delete': true, 'card-edit': true },
      `controls while editing (opened by ${open})`);
    // A click on Delete does nothing: the card and its editor stay.
    await c.locator('[data-testid="card-delete"]').click({ force: true });
    await c.locator('[data-testid="title-input"]').fill('Middle, renamed');
    await c.locator('[data-testid="title-save"]').click();
    await a.locator(`[data-testid="card"][data-id="${id}"][data-title="Middle, renamed"][data-pending="false"]`).waitFor();
    assert.equal(await c.getAttribute('data-col'), 'doing');
    assert.deepEqual(await disabled(c), { 'card-left': false, 'card-right': false, 'card-delete': false, 'card-edit': false },
      'controls after saving');
    await c.locator('[data-testid="card-edit"]').click();
    await c.locator('[data-testid="title-input"]').waitFor({ state: 'visible' });
    await c.locator('[data-testid="title-input"]').fill('Middle');
    await c.locator('[data-testid="title-save"]').click();
    await a.locator(`[data-testid="card"][data-id="${id}"][data-title="Middle"][data-pending="false"]`).waitFor();
  }

  // Cancel re-enables them too.
  await c.locator('[data-testid="card-edit"]').click();
  await c.locator('[data-testid="title-input"]').waitFor({ state: 'visible' });
  assert.equal(await c.locator('[data-testid="card-delete"]').isDisabled(), true);
  await c.locator('[data-testid="title-cancel"]').click();
  await c.locator('[data-testid="title-input"]').waitFor({ state: 'hidden' });
  assert.deepEqual(await disabled(c), { 'card-left': false, 'card-right': false, 'card-delete': false, 'card-edit': false });

  assert.deepEqual(a.problems, []);
});
