// title-limit.test.mjs -- card titles are limited (the inputs' maxlength,
// 200 characters); text beyond it is cut by the browser. The user is told:
// near the limit a counter shows, at the limit a message says so, and when
// typed or pasted text was cut, that it was. Both in the add form and in the
// title editor.
import assert from 'node:assert/strict';
import test from 'node:test';
import { cardById, launchBrowser, openBoard, startDemoServer } from './helpers.mjs';

test('a title cut at the length limit tells the user', { timeout: 30000 }, async (t) => {
  const srv = await startDemoServer(t);
  const browser = await launchBrowser(t);
  const { page: a } = await openBoard(browser, srv, { user: 'alice' });

  const form = a.locator('[data-testid="column"][data-col="todo"] [data-testid="add-form"]');
  const input = form.locator('[data-testid="add-input"]');
  const limit = form.locator('[data-testid="title-limit"]');
  const max = await input.evaluate((el) => el.maxLength);
  assert.equal(max, 200); // the limit the app enforces

  // Short: nothing to say.
  await input.fill('short');
  assert.equal(await limit.isVisible(), false);

  // Pasted text longer than the limit: cut, and said so with the limit.
  await input.fill('');
  await input.focus();
  await a.keyboard.insertText('p'.repeat(max + 50));
  assert.equal((await input.inputValue()).length, max);
  await limit.filter({ hasText: /cut/ }).waitFor({ state: 'visible' });
  assert.match(await limit.textContent(), new RegExp(`\\b${max}\\b`));
  assert.match(await limit.textContent(), /cut/);

  // Near the limit, a counter; typing to the limit says it is reached.
  await input.fill('n'.repeat(max - 5));
  await limit.waitFor({ state: 'visible' });
  assert.match(await limit.textContent(), new RegExp(`${max - 5}\\s*/\\s*${max}`));
  await input.press('End');
  await a.keyboard.type('123456789');
  assert.equal((await input.inputValue()).length, max);
  assert.match(await limit.textContent(), new RegExp(`\\b${max}\\b.*(limit|cut)`));

  // The card is added with the cut title; the form's message goes with the text.
  await input.press('Enter');
  const id = await a.locator('[data-testid="card"]').first().getAttribute('data-id');
  assert.equal((await cardById(a, id).getAttribute('data-title')).length, max);
  await limit.waitFor({ state: 'hidden' });

  // The title editor says the same when text is cut there.
  const c = cardById(a, id);
  await c.locator('[data-testid="card-edit"]').click();
  const ed = c.locator('[data-testid="title-input"]');
  await ed.waitFor({ state: 'visible' });
  const edLimit = c.locator('[data-testid="title-limit"]');
  await ed.press('End');
  await a.keyboard.insertText('more');
  assert.equal((await ed.inputValue()).length, max);
  // The message is set after the browser refused the text (a task later):
  // wait for it to say so, not for the first text it shows.
  await edLimit.filter({ hasText: /cut/ }).waitFor({ state: 'visible' });
  assert.match(await edLimit.textContent(), /cut/);
  await c.locator('[data-testid="title-cancel"]').click();
  await edLimit.waitFor({ state: 'hidden' });

  assert.deepEqual(a.problems, []);
});
