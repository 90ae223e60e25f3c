import { defineWorkerPlugins } from 'conveyor';

/**
 * Worker-side code the credit-risk pipeline can name. Run the worker with
 *   npx conveyor worker --plugin examples/credit-risk/plugins.ts
 * and refer to the check from a pipeline: { rule: 'custom', check: 'loan_within_income' }.
 */
export default defineWorkerPlugins({
  checks: {
    // A loan larger than five years of income is almost certainly a unit error upstream.
    loan_within_income: async ({ connection, table }) => {
      const reader = await connection.runAndReadAll(
        `SELECT count(*)::INTEGER AS bad FROM ${table} WHERE TRY_CAST(loan_amount AS DOUBLE) > 5 * TRY_CAST(income AS DOUBLE)`,
      );
      const bad = Number(reader.getRowObjectsJS()[0]?.bad ?? 0);
      return { passed: bad === 0, message: bad === 0 ? 'every loan is within 5× income' : `${bad} loans exceed 5× the applicant's income` };
    },
  },
});
