// Lint in `npm test`: the promise rules catch a promise nobody awaits or a rejection nobody handles (the
// class of bug behind a silent failed fill); the line length matches prettier's. Type-aware (the rules
// need the types), over src/, test/, bench/ and scripts/: one program, test/tsconfig.json's, which holds
// them all (a second one for src/ alone had src/ type-checked twice: 15% of lint's CPU).
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'coverage/**', '.stryker-tmp/**', 'reports/**'] },
  {
    files: ['**/*.ts'],
    languageOptions: {
      parser: tseslint.parser,
      parserOptions: { project: ['./test/tsconfig.json'], tsconfigRootDir: import.meta.dirname },
    },
    plugins: { '@typescript-eslint': tseslint.plugin },
    rules: {
      // node:test's describe/it return promises the runner itself awaits.
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            { from: 'package', package: 'node:test', name: ['describe', 'it', 'test', 'suite', 'before', 'after', 'beforeEach', 'afterEach'] },
          ],
        },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      'max-len': ['error', { code: 180, ignoreUrls: true, ignoreStrings: true, ignoreTemplateLiterals: true, ignoreRegExpLiterals: true }],
    },
  },
  {
    // A cast reads undefined from whatever was thrown that is no Error (a string, a library's object):
    // src/telemetry/error-message.ts turns any thrown value into a message (errorMessage) or a code (errorCode).
    files: ['src/**/*.ts'],
    rules: {
      'no-restricted-syntax': [
        'error',
        {
          selector: "TSAsExpression > TSTypeReference.typeAnnotation[typeName.name='Error']",
          message: 'Use errorMessage(err) / errorCode(err) from src/telemetry/error-message.ts, or narrow with instanceof Error.',
        },
        {
          selector: "TSAsExpression > TSTypeReference.typeAnnotation[typeName.right.name='ErrnoException']",
          message: 'Use errorCode(err) from src/telemetry/error-message.ts.',
        },
        {
          selector: "TSAsExpression > TSIntersectionType.typeAnnotation > TSTypeReference[typeName.name='Error']",
          message: 'Use errorMessage(err) / errorCode(err) from src/telemetry/error-message.ts, or narrow with instanceof Error.',
        },
      ],
    },
  },
);
